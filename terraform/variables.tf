# --- Where ---------------------------------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "ID of the Google Cloud project the integration is deployed into."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID: 6-30 lowercase letters, digits or hyphens."
  }
}

variable "region" {
  type        = string
  description = "Region of the Cloud Run services, the Artifact Registry repository and (by default) the exports bucket and Firestore database, e.g. europe-west1."

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1 or us-central1."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name (services, service accounts, secrets, topics)."
  default     = "mineos"

  validation {
    # Service account IDs are at most 30 characters: the prefix plus "-pubsub-push" must fit.
    condition     = can(regex("^[a-z][a-z0-9-]{1,16}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-18 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every resource that takes labels."
  default     = {}
}

variable "enable_apis" {
  type        = bool
  description = "Enable the Google Cloud APIs the integration needs. Turn off when the project's APIs are managed elsewhere."
  default     = true
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the Cloud Run services and the Firestore database against deletion (terraform destroy fails while on)."
  default     = true
}

# --- Image and services ----------------------------------------------------------------------------

variable "image" {
  type        = string
  description = "Container image both services start with, e.g. europe-west1-docker.pkg.dev/PROJECT/mineos/mineos-integration:TAG. Used when the services are created; afterwards Cloud Build deploys new images and Terraform ignores this value."

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$", var.image))
    error_message = "image must be a full image reference with a tag or a digest: REGISTRY/PATH:TAG or REGISTRY/PATH@sha256:DIGEST."
  }
}

variable "artifact_repository_id" {
  type        = string
  description = "ID of the Artifact Registry (Docker) repository the image is pushed to."
  default     = "mineos"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.artifact_repository_id))
    error_message = "artifact_repository_id must be lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "artifact_keep_recent_images" {
  type        = number
  description = "Number of most recent image versions the repository cleanup policy always keeps (rollback targets)."
  default     = 10

  validation {
    condition     = var.artifact_keep_recent_images >= 1 && var.artifact_keep_recent_images <= 100 && floor(var.artifact_keep_recent_images) == var.artifact_keep_recent_images
    error_message = "artifact_keep_recent_images must be a whole number from 1 to 100."
  }
}

variable "artifact_delete_after_days" {
  type        = number
  description = "Image versions older than this many days are deleted, except the most recent artifact_keep_recent_images."
  default     = 90

  validation {
    condition     = var.artifact_delete_after_days >= 1 && var.artifact_delete_after_days <= 3650 && floor(var.artifact_delete_after_days) == var.artifact_delete_after_days
    error_message = "artifact_delete_after_days must be a whole number from 1 to 3650."
  }
}

variable "log_level" {
  type        = string
  description = "LOG_LEVEL of both services."
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be one of DEBUG, INFO, WARNING, ERROR."
  }
}

variable "ingress_cpu" {
  type        = string
  description = "CPU limit of an ingress instance (Cloud Run notation: \"1\", \"2\", \"1000m\")."
  default     = "1"

  validation {
    condition     = can(regex("^([1-8]|[1-9][0-9]{2,3}m)$", var.ingress_cpu))
    error_message = "ingress_cpu must be 1-8 or millicores such as 1000m."
  }
}

variable "ingress_memory" {
  type        = string
  description = "Memory limit of an ingress instance (\"512Mi\", \"1Gi\")."
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.ingress_memory))
    error_message = "ingress_memory must be a quantity in Mi or Gi, e.g. 512Mi."
  }
}

variable "collector_cpu" {
  type        = string
  description = "CPU limit of a collector instance (Cloud Run notation: \"1\", \"2\", \"1000m\")."
  default     = "1"

  validation {
    condition     = can(regex("^([1-8]|[1-9][0-9]{2,3}m)$", var.collector_cpu))
    error_message = "collector_cpu must be 1-8 or millicores such as 1000m."
  }
}

variable "collector_memory" {
  type        = string
  description = "Memory limit of a collector instance (\"1Gi\"). Exports are streamed, so this does not grow with their size."
  default     = "1Gi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.collector_memory))
    error_message = "collector_memory must be a quantity in Mi or Gi, e.g. 1Gi."
  }
}

variable "ingress_max_instances" {
  type        = number
  description = "Maximum number of ingress instances."
  default     = 10

  validation {
    condition     = var.ingress_max_instances >= 1 && var.ingress_max_instances <= 1000 && floor(var.ingress_max_instances) == var.ingress_max_instances
    error_message = "ingress_max_instances must be a whole number from 1 to 1000."
  }
}

variable "collector_max_instances" {
  type        = number
  description = "Maximum number of collector instances; with collector_concurrency this bounds the load on the company's data stores."
  default     = 10

  validation {
    condition     = var.collector_max_instances >= 1 && var.collector_max_instances <= 1000 && floor(var.collector_max_instances) == var.collector_max_instances
    error_message = "collector_max_instances must be a whole number from 1 to 1000."
  }
}

variable "ingress_concurrency" {
  type        = number
  description = "Concurrent requests per ingress instance."
  default     = 16

  validation {
    condition     = var.ingress_concurrency >= 1 && var.ingress_concurrency <= 1000 && floor(var.ingress_concurrency) == var.ingress_concurrency
    error_message = "ingress_concurrency must be a whole number from 1 to 1000."
  }
}

variable "collector_concurrency" {
  type        = number
  description = "Concurrent Pub/Sub pushes per collector instance."
  default     = 2

  validation {
    condition     = var.collector_concurrency >= 1 && var.collector_concurrency <= 1000 && floor(var.collector_concurrency) == var.collector_concurrency
    error_message = "collector_concurrency must be a whole number from 1 to 1000."
  }
}

variable "ingress_timeout_seconds" {
  type        = number
  description = "Cloud Run request timeout of the ingress."
  default     = 60

  validation {
    condition = (
      var.ingress_timeout_seconds >= 10 && var.ingress_timeout_seconds <= 3600
      && var.ingress_timeout_seconds > var.preview_deadline_seconds
      && var.ingress_timeout_seconds > var.publish_timeout_seconds
    )
    error_message = "ingress_timeout_seconds must be 10-3600 and longer than preview_deadline_seconds and publish_timeout_seconds."
  }
}

# --- MineOS and the signature -------------------------------------------------------------------------

variable "mineos_api_base_url" {
  type        = string
  description = "MINEOS_API_BASE_URL: the MineOS API of the company's MineOS region (EU or US)."
  default     = "https://api.portal.saymine.com"

  validation {
    condition     = contains(["https://api.portal.saymine.com", "https://api.us.portal.saymine.com"], var.mineos_api_base_url)
    error_message = "mineos_api_base_url must be https://api.portal.saymine.com (EU) or https://api.us.portal.saymine.com (US)."
  }
}

variable "mineos_timeout_seconds" {
  type        = number
  description = "MINEOS_TIMEOUT_SECONDS: timeout of one call to the MineOS API."
  default     = 10

  validation {
    condition     = var.mineos_timeout_seconds > 0 && var.mineos_timeout_seconds <= 120
    error_message = "mineos_timeout_seconds must be more than 0 and at most 120."
  }
}

variable "mineos_max_attempts" {
  type        = number
  description = "MINEOS_MAX_ATTEMPTS: attempts of one MineOS API call before the collector gives up and lets Pub/Sub redeliver."
  default     = 5

  validation {
    condition     = var.mineos_max_attempts >= 1 && var.mineos_max_attempts <= 10 && floor(var.mineos_max_attempts) == var.mineos_max_attempts
    error_message = "mineos_max_attempts must be a whole number from 1 to 10."
  }
}

variable "signature_algorithm" {
  type        = string
  description = "MINE_SIGNATURE_ALGORITHM: HMAC hash of X-Mine-Signature."
  default     = "sha256"

  validation {
    condition     = contains(["sha256", "sha1", "sha512"], var.signature_algorithm)
    error_message = "signature_algorithm must be one of sha256, sha1, sha512."
  }
}

variable "signature_encoding" {
  type        = string
  description = "MINE_SIGNATURE_ENCODING: encoding of X-Mine-Signature."
  default     = "base64"

  validation {
    condition     = contains(["base64", "hex"], var.signature_encoding)
    error_message = "signature_encoding must be base64 or hex."
  }
}

variable "max_body_bytes" {
  type        = number
  description = "MAX_BODY_BYTES: largest request body the ingress accepts."
  default     = 262144

  validation {
    # Cloud Run's own limit for an HTTP/1 request is 32 MiB.
    condition     = var.max_body_bytes >= 1024 && var.max_body_bytes <= 33554432 && floor(var.max_body_bytes) == var.max_body_bytes
    error_message = "max_body_bytes must be a whole number from 1024 to 33554432 (32 MiB)."
  }
}

variable "publish_timeout_seconds" {
  type        = number
  description = "PUBLISH_TIMEOUT_SECONDS: how long the ingress waits for Pub/Sub to accept a request before answering 503."
  default     = 10

  validation {
    condition     = var.publish_timeout_seconds > 0 && var.publish_timeout_seconds <= 60
    error_message = "publish_timeout_seconds must be more than 0 and at most 60."
  }
}

variable "preview_deadline_seconds" {
  type        = number
  description = "PREVIEW_DEADLINE_SECONDS: time budget of a synchronous preview call."
  default     = 5

  validation {
    condition     = var.preview_deadline_seconds > 0 && var.preview_deadline_seconds <= 30
    error_message = "preview_deadline_seconds must be more than 0 and at most 30."
  }
}

# --- Ledger (Firestore) -----------------------------------------------------------------------------

variable "create_firestore_database" {
  type        = bool
  description = "Create the project's (default) Firestore database in Native mode. Turn off when it already exists (it must be in Native mode)."
  default     = true
}

variable "firestore_location_id" {
  type        = string
  description = "Location of the Firestore database (a region such as europe-west1 or a multi-region such as eur3). Defaults to var.region."
  default     = null
}

variable "ledger_collection" {
  type        = string
  description = "LEDGER_COLLECTION: Firestore collection of the ledger; its expires_at field gets the TTL policy."
  default     = "mineos_operations"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_-]{0,99}$", var.ledger_collection))
    error_message = "ledger_collection must be a collection ID: letters, digits, underscores or hyphens, starting with a letter."
  }
}

variable "ledger_retention_days" {
  type        = number
  description = "LEDGER_RETENTION_DAYS: days a ledger document is kept (its expires_at) before the TTL policy deletes it."
  default     = 90

  validation {
    condition     = var.ledger_retention_days >= 1 && var.ledger_retention_days <= 3650 && floor(var.ledger_retention_days) == var.ledger_retention_days
    error_message = "ledger_retention_days must be a whole number from 1 to 3650."
  }
}

variable "source_timeout_seconds" {
  type        = number
  description = "SOURCE_TIMEOUT_SECONDS: bound of each call to one of the company's data sources (both services)."
  default     = 30

  validation {
    condition     = var.source_timeout_seconds > 0 && var.source_timeout_seconds <= 600
    error_message = "source_timeout_seconds must be more than 0 and at most 600."
  }
}

variable "collector_timeout_seconds" {
  type        = number
  description = "Longest time the collector works on one request: its Cloud Run request timeout and the ack deadline of both subscriptions."
  default     = 600

  validation {
    # 600 s is Pub/Sub's largest ack deadline.
    condition     = var.collector_timeout_seconds >= 10 && var.collector_timeout_seconds <= 600 && floor(var.collector_timeout_seconds) == var.collector_timeout_seconds
    error_message = "collector_timeout_seconds must be a whole number from 10 to 600."
  }
}

variable "lease_seconds" {
  type        = number
  description = "LEASE_SECONDS: how long a collector's claim on an operation lasts before another delivery may take it over."
  default     = 660

  validation {
    # A lease shorter than the request timeout lets a second worker start while the first still runs.
    condition     = var.lease_seconds > var.collector_timeout_seconds && var.lease_seconds <= 3600 && floor(var.lease_seconds) == var.lease_seconds
    error_message = "lease_seconds must be a whole number, longer than collector_timeout_seconds and at most 3600."
  }
}

# --- Exports (Cloud Storage) --------------------------------------------------------------------------

variable "exports_bucket_name" {
  type        = string
  description = "Name of the exports bucket. Defaults to PROJECT_ID-NAME_PREFIX-exports."
  default     = null

  validation {
    condition     = var.exports_bucket_name == null || can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.exports_bucket_name))
    error_message = "exports_bucket_name must be 3-63 lowercase letters, digits, hyphens or underscores."
  }
}

variable "exports_bucket_location" {
  type        = string
  description = "Location of the exports bucket (a region or multi-region). Defaults to var.region."
  default     = null
}

variable "export_retention_days" {
  type        = number
  description = "Days after which exported files are deleted by the bucket's lifecycle rule."
  default     = 14

  validation {
    # The files must outlive the links handed to MineOS.
    condition = (
      var.export_retention_days >= 1 && var.export_retention_days <= 365 && floor(var.export_retention_days) == var.export_retention_days
      && var.export_retention_days * 86400 >= var.signed_url_ttl_seconds
    )
    error_message = "export_retention_days must be a whole number from 1 to 365 and cover signed_url_ttl_seconds."
  }
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) that encrypts the exports bucket and both Pub/Sub topics (CMEK): the places that hold personal data. It must be in a location compatible with the bucket's. Null: Google-managed encryption."
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a crypto key resource name: projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

variable "signed_url_ttl_seconds" {
  type        = number
  description = "SIGNED_URL_TTL_SECONDS: validity of the export links handed to MineOS (V4 signed URLs: at most 7 days)."
  default     = 259200

  validation {
    condition     = var.signed_url_ttl_seconds >= 60 && var.signed_url_ttl_seconds <= 604800 && floor(var.signed_url_ttl_seconds) == var.signed_url_ttl_seconds
    error_message = "signed_url_ttl_seconds must be a whole number from 60 to 604800 (7 days)."
  }
}

variable "inline_data_max_bytes" {
  type        = number
  description = "INLINE_DATA_MAX_BYTES: largest export also sent inline in the status update's data (0: never)."
  default     = 16384

  validation {
    condition     = var.inline_data_max_bytes >= 0 && var.inline_data_max_bytes <= 1048576 && floor(var.inline_data_max_bytes) == var.inline_data_max_bytes
    error_message = "inline_data_max_bytes must be a whole number from 0 to 1048576."
  }
}

# --- Pub/Sub --------------------------------------------------------------------------------------

variable "requests_topic_name" {
  type        = string
  description = "REQUESTS_TOPIC: the Pub/Sub topic between ingress and collector. The dead-letter topic is named <this>-dead-letter."
  default     = "mineos-requests"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,200}$", var.requests_topic_name)) && !startswith(lower(var.requests_topic_name), "goog")
    error_message = "requests_topic_name must be 3-201 characters (letters, digits, - . _ ~ + %), start with a letter and not with goog."
  }
}

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries of a request to the collector before Pub/Sub forwards it to the dead-letter topic."
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100 && floor(var.max_delivery_attempts) == var.max_delivery_attempts
    error_message = "max_delivery_attempts must be a whole number from 5 to 100 (Pub/Sub's limits)."
  }
}

variable "retry_minimum_backoff_seconds" {
  type        = number
  description = "Shortest wait before Pub/Sub redelivers a request the collector refused (exponential backoff starts here)."
  default     = 10

  validation {
    condition     = var.retry_minimum_backoff_seconds >= 0 && var.retry_minimum_backoff_seconds <= 600 && floor(var.retry_minimum_backoff_seconds) == var.retry_minimum_backoff_seconds
    error_message = "retry_minimum_backoff_seconds must be a whole number from 0 to 600."
  }
}

variable "retry_maximum_backoff_seconds" {
  type        = number
  description = "Longest wait between redeliveries (exponential backoff stops growing here)."
  default     = 600

  validation {
    condition = (
      var.retry_maximum_backoff_seconds >= 0 && var.retry_maximum_backoff_seconds <= 600 && floor(var.retry_maximum_backoff_seconds) == var.retry_maximum_backoff_seconds
      && var.retry_maximum_backoff_seconds >= var.retry_minimum_backoff_seconds
    )
    error_message = "retry_maximum_backoff_seconds must be a whole number from 0 to 600 and at least retry_minimum_backoff_seconds."
  }
}

variable "message_retention_seconds" {
  type        = number
  description = "How long both subscriptions keep unacknowledged messages."
  default     = 604800

  validation {
    condition     = var.message_retention_seconds >= 600 && var.message_retention_seconds <= 604800 && floor(var.message_retention_seconds) == var.message_retention_seconds
    error_message = "message_retention_seconds must be a whole number from 600 (10 minutes) to 604800 (7 days)."
  }
}

# --- Secrets ------------------------------------------------------------------------------------------

variable "secret_replica_locations" {
  type        = list(string)
  description = "Regions the Secret Manager secrets are replicated to (data residency). Empty: automatic replication."
  default     = []
}

variable "data_store_env" {
  type        = map(string)
  description = "Plain environment variables the data map's sources read in both services (never secrets: see *_data_store_secrets)."
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.data_store_env) : can(regex("^[A-Z][A-Z0-9_]*$", name))])
    error_message = "data_store_env names must be upper-case environment variable names."
  }

  validation {
    condition     = alltrue([for name in keys(var.data_store_env) : !can(regex("(SECRET|PASSWORD|TOKEN|API_KEY|CREDENTIAL)", name))])
    error_message = "data_store_env must not carry secrets; put them in Secret Manager and use collector_data_store_secrets / ingress_data_store_secrets."
  }

  validation {
    condition     = length(setintersection(keys(var.data_store_env), local.application_env_names)) == 0
    error_message = "data_store_env must not redefine the application's own settings."
  }
}

variable "collector_data_store_secrets" {
  type        = map(string)
  description = "Secrets the data map names (url_env, auth_env, token_env...) for copy and delete: environment variable name => ID of a Secret Manager secret in this project that the company created. The collector may read exactly these."
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.collector_data_store_secrets) : can(regex("^[A-Z][A-Z0-9_]*$", name))])
    error_message = "collector_data_store_secrets names must be upper-case environment variable names."
  }

  validation {
    condition     = length(setintersection(keys(var.collector_data_store_secrets), local.application_env_names)) == 0
    error_message = "collector_data_store_secrets must not redefine the application's own settings."
  }
}

variable "ingress_data_store_secrets" {
  type        = map(string)
  description = "The same environment variable names for the ingress, whose preview reads the data stores synchronously: best pointed at read-only credentials. The ingress may read exactly these."
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.ingress_data_store_secrets) : can(regex("^[A-Z][A-Z0-9_]*$", name))])
    error_message = "ingress_data_store_secrets names must be upper-case environment variable names."
  }

  validation {
    condition     = length(setintersection(keys(var.ingress_data_store_secrets), local.application_env_names)) == 0
    error_message = "ingress_data_store_secrets must not redefine the application's own settings."
  }
}

# --- Alerting -----------------------------------------------------------------------------------

variable "alert_emails" {
  type        = list(string)
  description = "E-mail addresses that receive the alerts (an e-mail notification channel is created for each)."
  default     = []

  validation {
    condition     = alltrue([for email in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", email))])
    error_message = "alert_emails must be e-mail addresses."
  }
}

variable "alert_notification_channels" {
  type        = list(string)
  description = "IDs of existing Cloud Monitoring notification channels (projects/P/notificationChannels/N) that also receive the alerts."
  default     = []
}

variable "oldest_unacked_message_alert_seconds" {
  type        = number
  description = "Alert when the oldest undelivered request (or dead letter) has waited longer than this."
  default     = 3600

  validation {
    condition     = var.oldest_unacked_message_alert_seconds >= 60 && var.oldest_unacked_message_alert_seconds <= 604800
    error_message = "oldest_unacked_message_alert_seconds must be from 60 to 604800."
  }
}
