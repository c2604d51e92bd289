resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.alert_emails)

  project      = var.project_id
  display_name = "MineOS integration: ${each.key}"
  type         = "email"
  labels = {
    email_address = each.key
  }
  depends_on = [google_project_service.enabled]
}

locals {
  notification_channels = concat(
    var.alert_notification_channels,
    [for channel in google_monitoring_notification_channel.email : channel.id],
  )
}

# A dead-lettered request is one MineOS will see as Failed: someone should look at it.
resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "MineOS integration: requests dead-lettered"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "Requests forwarded to ${google_pubsub_topic.dead_letter.name}"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.requests.name}\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A MineOS request failed ${var.max_delivery_attempts} times and was dead-lettered; the collector reports it to MineOS as Failed. Find the cause in the collector's logs (filter on the MineOS trace id) — see docs/deploy.md, \"Operating\"."
  }

  depends_on = [google_project_service.enabled]
}

# Requests (or dead letters) waiting too long: the collector is down, failing, or cannot keep up.
resource "google_monitoring_alert_policy" "oldest_unacked_message" {
  project               = var.project_id
  display_name          = "MineOS integration: requests waiting too long"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "Oldest unacknowledged message older than ${var.oldest_unacked_message_alert_seconds}s"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = one_of(\"${google_pubsub_subscription.requests.name}\", \"${google_pubsub_subscription.dead_letters.name}\") AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.oldest_unacked_message_alert_seconds
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A MineOS request has waited more than ${var.oldest_unacked_message_alert_seconds}s for the collector. Check the collector service's logs and errors — see docs/deploy.md, \"Operating\"."
  }

  depends_on = [google_project_service.enabled]
}
