# The properties that matter most, in one run: who can reach the services, where secrets go, that
# refused requests are dead-lettered, that personal data is private and expires, and least privilege.
# tests/deploy/test_terraform.py plants a mistake for each and expects this file to report it.

mock_provider "google" {
  source = "./tests/mocks"
}

override_resource {
  target = module.ingress.google_cloud_run_v2_service.this
  values = { uri = "https://mineos-ingress-test.a.run.app" }
}

override_resource {
  target = module.collector.google_cloud_run_v2_service.this
  values = { uri = "https://mineos-collector-test.a.run.app" }
}

variables {
  project_id = "mineos-test-project"
  region     = "europe-west1"
  image      = "europe-west1-docker.pkg.dev/mineos-test-project/mineos/mineos-integration:test"
  data_store_env = {
    SHOP_DATABASE_NAME = "shop"
  }
  collector_data_store_secrets = {
    SHOP_DATABASE_URL = "shop-database-url"
  }
  ingress_data_store_secrets = {
    SHOP_DATABASE_URL = "shop-database-url-read-only"
  }
}

run "guarantees_hold" {
  command = apply

  # --- the collector is not public ---
  assert {
    condition     = module.collector.service.ingress == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    error_message = "The collector must not be reachable from the internet: ingress must be INGRESS_TRAFFIC_INTERNAL_ONLY."
  }

  assert {
    condition     = module.collector.service.invoker_iam_disabled != true
    error_message = "The collector must require an authorised identity: invoker_iam_disabled must be off."
  }

  assert {
    condition     = module.collector.invoker_members == [google_service_account.pubsub_push.member]
    error_message = "Only the Pub/Sub push service account may invoke the collector."
  }

  # --- the ingress is public (the signature is its authentication) ---
  assert {
    condition     = module.ingress.service.ingress == "INGRESS_TRAFFIC_ALL"
    error_message = "MineOS calls the ingress from the internet: ingress must be INGRESS_TRAFFIC_ALL."
  }

  assert {
    condition     = module.ingress.service.invoker_iam_disabled == true && length(module.ingress.invoker_members) == 0
    error_message = "MineOS cannot present a Google identity: the ingress must allow unauthenticated invocations (invoker check off, no bindings needed)."
  }

  # --- secrets are never plain environment variables ---
  assert {
    condition = alltrue([
      for env in setunion(module.ingress.service.template[0].containers[0].env, module.collector.service.template[0].containers[0].env) :
      (env.value == null || env.value == "") && length(env.value_source) == 1
      if can(regex("SECRET|API_KEY|PASSWORD|TOKEN|CREDENTIAL", env.name))
    ])
    error_message = "A secret is set as a plain environment variable: secrets must come from Secret Manager (value_source)."
  }

  assert {
    condition = (
      [for env in module.ingress.service.template[0].containers[0].env : env.value_source[0].secret_key_ref[0].secret if env.name == "MINE_SIGNING_SECRETS"]
      == [google_secret_manager_secret.integration["signing_secrets"].secret_id]
      && [for env in module.collector.service.template[0].containers[0].env : env.value_source[0].secret_key_ref[0].secret if env.name == "MINEOS_API_KEY"]
      == [google_secret_manager_secret.integration["mineos_api_key"].secret_id]
    )
    error_message = "MINE_SIGNING_SECRETS (ingress) and MINEOS_API_KEY (collector) must come from their Secret Manager secrets."
  }

  # --- refused requests are dead-lettered ---
  assert {
    condition     = google_pubsub_subscription.requests.dead_letter_policy[0].dead_letter_topic == google_pubsub_topic.dead_letter.id
    error_message = "Refused requests must be dead-lettered to the dead-letter topic."
  }

  assert {
    condition = (
      google_pubsub_subscription.requests.dead_letter_policy[0].max_delivery_attempts >= 5
      && google_pubsub_subscription.requests.dead_letter_policy[0].max_delivery_attempts <= 100
    )
    error_message = "max_delivery_attempts must be within Pub/Sub's 5-100."
  }

  assert {
    condition     = google_pubsub_subscription.requests.enable_message_ordering == false && length(google_pubsub_subscription.requests.retry_policy) == 1
    error_message = "The dead-lettered subscription needs an exponential retry policy and no message ordering."
  }

  assert {
    condition = (
      google_pubsub_subscription.dead_letters.topic == google_pubsub_topic.dead_letter.id
      && google_pubsub_subscription.dead_letters.push_config[0].push_endpoint == "https://mineos-collector-test.a.run.app/dead-letters"
    )
    error_message = "Dead letters must be pushed to the collector's /dead-letters."
  }

  assert {
    condition = (
      anytrue([
        for grant in google_pubsub_topic_iam_member.grants :
        grant.topic == google_pubsub_topic.dead_letter.id && grant.role == "roles/pubsub.publisher"
        && grant.member == "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
      ])
      && anytrue([
        for grant in google_pubsub_subscription_iam_member.grants :
        grant.subscription == google_pubsub_subscription.requests.id && grant.role == "roles/pubsub.subscriber"
        && grant.member == "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
      ])
    )
    error_message = "The Pub/Sub service agent must publish to the dead-letter topic and acknowledge on the source subscription."
  }

  # --- exports are private and expire; the ledger expires ---
  assert {
    condition     = google_storage_bucket.exports.uniform_bucket_level_access == true
    error_message = "The exports bucket must use uniform bucket-level access (no object ACLs)."
  }

  assert {
    condition     = google_storage_bucket.exports.public_access_prevention == "enforced"
    error_message = "The exports bucket must enforce public access prevention."
  }

  assert {
    condition = anytrue([
      for rule in google_storage_bucket.exports.lifecycle_rule :
      one(rule.action).type == "Delete" && one(rule.condition).age == var.export_retention_days
    ])
    error_message = "The exports bucket must delete objects after export_retention_days."
  }

  assert {
    condition = (
      google_firestore_field.ledger_expiry.collection == var.ledger_collection
      && google_firestore_field.ledger_expiry.field == "expires_at"
      && length(google_firestore_field.ledger_expiry.ttl_config) == 1
    )
    error_message = "The ledger collection's expires_at field must have a TTL policy."
  }

  # --- least privilege ---
  assert {
    condition = length(setintersection(
      toset(concat(
        [for grant in google_project_iam_member.grants : grant.role],
        [for grant in google_pubsub_topic_iam_member.grants : grant.role],
        [for grant in google_pubsub_subscription_iam_member.grants : grant.role],
        [for grant in google_storage_bucket_iam_member.grants : grant.role],
        [for grant in google_service_account_iam_member.grants : grant.role],
        [for grant in google_artifact_registry_repository_iam_member.grants : grant.role],
        [for grant in google_secret_manager_secret_iam_member.grants : grant.role],
        [for grant in google_secret_manager_secret_iam_member.data_stores : grant.role],
        [for grant in google_kms_crypto_key_iam_member.service_agents : grant.role],
        module.ingress.iam_roles,
        module.collector.iam_roles,
      )),
      toset(["roles/owner", "roles/editor", "roles/viewer"]),
    )) == 0
    error_message = "A basic role (roles/owner, roles/editor, roles/viewer) is granted: use a predefined role on the narrowest resource."
  }

  assert {
    condition = alltrue([
      for member in concat(
        [for grant in google_project_iam_member.grants : grant.member],
        [for grant in google_pubsub_topic_iam_member.grants : grant.member],
        [for grant in google_pubsub_subscription_iam_member.grants : grant.member],
        [for grant in google_storage_bucket_iam_member.grants : grant.member],
        [for grant in google_service_account_iam_member.grants : grant.member],
        [for grant in google_artifact_registry_repository_iam_member.grants : grant.member],
        [for grant in google_secret_manager_secret_iam_member.grants : grant.member],
      ) : !contains(["allUsers", "allAuthenticatedUsers"], member)
    ])
    error_message = "Nothing may be granted to allUsers or allAuthenticatedUsers."
  }

  assert {
    condition = toset([for grant in google_project_iam_member.grants : grant.role]) == toset([
      "roles/datastore.user", "roles/logging.logWriter",
    ])
    error_message = "Only Firestore access and build log writing may be granted project-wide."
  }
}
