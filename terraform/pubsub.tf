# ingress --publish--> requests topic --push (OIDC)--> collector /requests
#                         | after var.max_delivery_attempts refused deliveries
#                         v
#                      dead-letter topic --push (OIDC)--> collector /dead-letters (reports Failed once)

resource "google_pubsub_topic" "requests" {
  # checkov:skip=CKV_GCP_83:CMEK is optional (var.kms_key_name, tests/wiring.tftest.hcl); without it Google-managed keys encrypt messages at rest, and a company without Cloud KMS must still be able to deploy.
  project      = var.project_id
  name         = var.requests_topic_name
  kms_key_name = var.kms_key_name
  depends_on   = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83:CMEK is optional (var.kms_key_name, tests/wiring.tftest.hcl); without it Google-managed keys encrypt messages at rest, and a company without Cloud KMS must still be able to deploy.
  project      = var.project_id
  name         = local.dead_letter_topic_name
  kms_key_name = var.kms_key_name
  depends_on   = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

resource "google_pubsub_subscription" "requests" {
  project = var.project_id
  name    = "${var.requests_topic_name}-collector"
  topic   = google_pubsub_topic.requests.id

  # The collector may work on one request for up to collector_timeout_seconds before it answers.
  ack_deadline_seconds       = var.collector_timeout_seconds
  message_retention_duration = "${var.message_retention_seconds}s"
  # Ordering is not needed (the ledger orders an operation's steps) and must not be combined with
  # dead-lettering here.
  enable_message_ordering = false

  push_config {
    push_endpoint = "${module.collector.uri}/requests"
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = module.collector.uri
    }
  }

  # The collector answers non-2xx to ask for a redelivery: back off exponentially instead of
  # redelivering at once.
  retry_policy {
    minimum_backoff = "${var.retry_minimum_backoff_seconds}s"
    maximum_backoff = "${var.retry_maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  # Never expire for inactivity (the default deletes a subscription after 31 quiet days).
  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.grants]
}

resource "google_pubsub_subscription" "dead_letters" {
  project = var.project_id
  name    = "${local.dead_letter_topic_name}-collector"
  topic   = google_pubsub_topic.dead_letter.id

  ack_deadline_seconds       = var.collector_timeout_seconds
  message_retention_duration = "${var.message_retention_seconds}s"
  enable_message_ordering    = false

  push_config {
    push_endpoint = "${module.collector.uri}/dead-letters"
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = module.collector.uri
    }
  }

  # No further dead-lettering: an unreported dead letter stays here and raises the
  # oldest-unacked-message alert (monitoring.tf).
  retry_policy {
    minimum_backoff = "${var.retry_minimum_backoff_seconds}s"
    maximum_backoff = "${var.retry_maximum_backoff_seconds}s"
  }

  expiration_policy {
    ttl = ""
  }
}
