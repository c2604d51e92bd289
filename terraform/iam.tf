# Every grant of the integration, by resource kind. No project-wide role except Firestore access
# (Firestore IAM has no narrower scope) and build log writing; no basic roles
# (tests/guarantees.tftest.hcl). The company grants the collector (and, for previews, the ingress)
# access to its own data stores outside this configuration: docs/deploy.md, "Data stores".

locals {
  project_grants = {
    # The collector claims and advances ledger documents in transactions.
    collector_firestore = { role = "roles/datastore.user", member = google_service_account.collector.member }
    # The ingress reads the ledger to answer duplicates and creates an operation's first document.
    # roles/datastore.viewer would cover reading only, and Firestore IAM cannot narrow a role to one
    # collection, so this is the smallest predefined role that works.
    ingress_firestore = { role = "roles/datastore.user", member = google_service_account.ingress.member }
    # Cloud Build running as a user-managed service account writes its logs to Cloud Logging.
    deployer_build_logs = { role = "roles/logging.logWriter", member = google_service_account.deployer.member }
  }

  topic_grants = {
    ingress_publish_requests = {
      topic  = google_pubsub_topic.requests.id
      role   = "roles/pubsub.publisher"
      member = google_service_account.ingress.member
    }
    # Dead-lettering: the Pub/Sub service agent publishes the failed message to the dead-letter topic...
    pubsub_agent_publish_dead_letters = {
      topic  = google_pubsub_topic.dead_letter.id
      role   = "roles/pubsub.publisher"
      member = local.pubsub_service_agent
    }
  }

  subscription_grants = {
    # ...and acknowledges it on the source subscription.
    pubsub_agent_ack_requests = {
      subscription = google_pubsub_subscription.requests.id
      role         = "roles/pubsub.subscriber"
      member       = local.pubsub_service_agent
    }
  }

  bucket_grants = {
    # Create-only writes (if_generation_match=0) and reads for reuse and signed URLs; no delete or
    # overwrite: the lifecycle rule deletes exports.
    collector_create_exports = { role = "roles/storage.objectCreator", member = google_service_account.collector.member }
    collector_read_exports   = { role = "roles/storage.objectViewer", member = google_service_account.collector.member }
  }

  service_account_grants = {
    # signBlob as itself: keyless V4 signed URLs, no key file.
    collector_sign_as_itself = {
      service_account_id = google_service_account.collector.name
      role               = "roles/iam.serviceAccountTokenCreator"
      member             = google_service_account.collector.member
    }
    # Pub/Sub mints the push OIDC tokens as the push identity (needed explicitly in projects created
    # before April 2021; granted on this one account only, not project-wide).
    pubsub_agent_mint_push_tokens = {
      service_account_id = google_service_account.pubsub_push.name
      role               = "roles/iam.serviceAccountTokenCreator"
      member             = local.pubsub_service_agent
    }
    # Deploying a revision that runs as a service account requires acting as it.
    deployer_act_as_ingress = {
      service_account_id = google_service_account.ingress.name
      role               = "roles/iam.serviceAccountUser"
      member             = google_service_account.deployer.member
    }
    deployer_act_as_collector = {
      service_account_id = google_service_account.collector.name
      role               = "roles/iam.serviceAccountUser"
      member             = google_service_account.deployer.member
    }
  }

  repository_grants = {
    deployer_push_images = { role = "roles/artifactregistry.writer", member = google_service_account.deployer.member }
  }

  # Each service reads only its own secrets (secrets.tf).
  secret_grants = {
    ingress_signing_secrets = { secret = "signing_secrets", member = google_service_account.ingress.member }
    ingress_data_map        = { secret = "data_map", member = google_service_account.ingress.member }
    collector_api_key       = { secret = "mineos_api_key", member = google_service_account.collector.member }
    collector_data_map      = { secret = "data_map", member = google_service_account.collector.member }
  }
}

resource "google_project_iam_member" "grants" {
  for_each = local.project_grants

  project = var.project_id
  role    = each.value.role
  member  = each.value.member
}

resource "google_pubsub_topic_iam_member" "grants" {
  for_each = local.topic_grants

  project = var.project_id
  topic   = each.value.topic
  role    = each.value.role
  member  = each.value.member
}

resource "google_pubsub_subscription_iam_member" "grants" {
  for_each = local.subscription_grants

  project      = var.project_id
  subscription = each.value.subscription
  role         = each.value.role
  member       = each.value.member
}

resource "google_storage_bucket_iam_member" "grants" {
  for_each = local.bucket_grants

  bucket = google_storage_bucket.exports.name
  role   = each.value.role
  member = each.value.member
}

resource "google_service_account_iam_member" "grants" {
  for_each = local.service_account_grants

  service_account_id = each.value.service_account_id
  role               = each.value.role
  member             = each.value.member
}

resource "google_artifact_registry_repository_iam_member" "grants" {
  for_each = local.repository_grants

  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = each.value.role
  member     = each.value.member
}

resource "google_secret_manager_secret_iam_member" "grants" {
  for_each = local.secret_grants

  project   = var.project_id
  secret_id = google_secret_manager_secret.integration[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value.member
}

# Secrets the company created for its data stores (the data map's *_env variables): each service
# reads exactly the ones it is given.
resource "google_secret_manager_secret_iam_member" "data_stores" {
  for_each = merge(
    { for name, secret in var.collector_data_store_secrets : "collector/${name}" => { secret = secret, member = google_service_account.collector.member } },
    { for name, secret in var.ingress_data_store_secrets : "ingress/${name}" => { secret = secret, member = google_service_account.ingress.member } },
  )

  project   = var.project_id
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value.member
}

# With CMEK (var.kms_key_name) the Cloud Storage and Pub/Sub service agents encrypt with the key.
data "google_storage_project_service_account" "storage_agent" {
  count   = var.kms_key_name == null ? 0 : 1
  project = var.project_id
}

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each = var.kms_key_name == null ? {} : {
    storage = data.google_storage_project_service_account.storage_agent[0].member
    pubsub  = local.pubsub_service_agent
  }

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
