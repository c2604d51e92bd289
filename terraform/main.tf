# A MineOS custom integration: ingress (public, signature-checked) -> Pub/Sub -> collector (private),
# a Firestore ledger, an exports bucket, Secret Manager secrets and least-privilege service accounts.
# Files by concern: apis.tf, artifact_registry.tf, service_accounts.tf, iam.tf, secrets.tf, storage.tf,
# firestore.tf, pubsub.tf, run.tf, monitoring.tf. docs/deploy.md walks through a first deployment.

locals {
  labels = merge({ app = "mineos-integration" }, var.labels)

  ingress_service_name   = "${var.name_prefix}-ingress"
  collector_service_name = "${var.name_prefix}-collector"
  exports_bucket_name    = coalesce(var.exports_bucket_name, "${var.project_id}-${var.name_prefix}-exports")
  dead_letter_topic_name = "${var.requests_topic_name}-dead-letter"

  # The data map (YAML) is company configuration: a Secret Manager secret mounted as a file into both
  # services, so it changes without a new image and is versioned (docs/deploy.md, step 3).
  data_map_mount_path = "/etc/mineos"
  data_map_file_name  = "datamap.yaml"
  data_map_path       = "${local.data_map_mount_path}/${local.data_map_file_name}"

  # Every setting the application reads (services/mineos_integration/settings.py) except
  # ANONYMISATION_KEY, which a data map with `hash` anonymisation needs and the company passes like
  # its other data-store secrets (docs/deploy.md); the company's variables must not collide with them.
  application_env_names = [
    "FUNCTION_TARGET", "GOOGLE_CLOUD_PROJECT", "LOG_LEVEL", "LEDGER_COLLECTION", "LEDGER_RETENTION_DAYS",
    "LEASE_SECONDS", "DATA_MAP_PATH", "MINE_SIGNING_SECRETS", "MINE_SIGNATURE_ALGORITHM",
    "MINE_SIGNATURE_ENCODING", "MAX_BODY_BYTES", "REQUESTS_TOPIC", "PUBLISH_TIMEOUT_SECONDS",
    "PREVIEW_DEADLINE_SECONDS", "MINEOS_API_KEY", "MINEOS_API_BASE_URL", "MINEOS_TIMEOUT_SECONDS",
    "MINEOS_MAX_ATTEMPTS", "MINEOS_BACKOFF_SECONDS", "EXPORT_BUCKET", "SIGNED_URL_TTL_SECONDS",
    "URL_SIGNING_KEY_FILE", "INLINE_DATA_MAX_BYTES", "FIRESTORE_TIMEOUT_SECONDS", "SOURCE_TIMEOUT_SECONDS",
    "PORT",
  ]

  common_env = merge(var.data_store_env, {
    GOOGLE_CLOUD_PROJECT   = var.project_id
    LOG_LEVEL              = var.log_level
    LEDGER_COLLECTION      = var.ledger_collection
    LEDGER_RETENTION_DAYS  = tostring(var.ledger_retention_days)
    LEASE_SECONDS          = tostring(var.lease_seconds)
    DATA_MAP_PATH          = local.data_map_path
    SOURCE_TIMEOUT_SECONDS = tostring(var.source_timeout_seconds)
  })

  ingress_env = merge(local.common_env, {
    FUNCTION_TARGET          = "ingress"
    MINE_SIGNATURE_ALGORITHM = var.signature_algorithm
    MINE_SIGNATURE_ENCODING  = var.signature_encoding
    MAX_BODY_BYTES           = tostring(var.max_body_bytes)
    REQUESTS_TOPIC           = google_pubsub_topic.requests.name
    PUBLISH_TIMEOUT_SECONDS  = tostring(var.publish_timeout_seconds)
    PREVIEW_DEADLINE_SECONDS = tostring(var.preview_deadline_seconds)
  })

  # URL_SIGNING_KEY_FILE is deliberately absent: on Cloud Run the collector signs URLs keylessly
  # (IAM signBlob as its own service account, see iam.tf).
  collector_env = merge(local.common_env, {
    FUNCTION_TARGET        = "collector"
    MINEOS_API_BASE_URL    = var.mineos_api_base_url
    MINEOS_TIMEOUT_SECONDS = tostring(var.mineos_timeout_seconds)
    MINEOS_MAX_ATTEMPTS    = tostring(var.mineos_max_attempts)
    EXPORT_BUCKET          = google_storage_bucket.exports.name
    SIGNED_URL_TTL_SECONDS = tostring(var.signed_url_ttl_seconds)
    INLINE_DATA_MAX_BYTES  = tostring(var.inline_data_max_bytes)
  })
}
