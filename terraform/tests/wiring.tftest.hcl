# How the pieces are connected: what each service is told, Pub/Sub push details, which identity may
# do what, and the optional settings (CMEK, an existing Firestore database).

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

run "services_are_configured_like_the_application_expects" {
  command = apply

  assert {
    condition = toset([for env in module.ingress.service.template[0].containers[0].env : env.name]) == toset([
      "FUNCTION_TARGET", "GOOGLE_CLOUD_PROJECT", "LOG_LEVEL", "LEDGER_COLLECTION", "LEDGER_RETENTION_DAYS",
      "LEASE_SECONDS", "DATA_MAP_PATH", "SOURCE_TIMEOUT_SECONDS", "MINE_SIGNING_SECRETS", "MINE_SIGNATURE_ALGORITHM",
      "MINE_SIGNATURE_ENCODING", "MAX_BODY_BYTES", "REQUESTS_TOPIC", "PUBLISH_TIMEOUT_SECONDS",
      "PREVIEW_DEADLINE_SECONDS", "SHOP_DATABASE_NAME", "SHOP_DATABASE_URL",
    ])
    error_message = "The ingress's environment variable names differ from the application's settings."
  }

  assert {
    condition = toset([for env in module.collector.service.template[0].containers[0].env : env.name]) == toset([
      "FUNCTION_TARGET", "GOOGLE_CLOUD_PROJECT", "LOG_LEVEL", "LEDGER_COLLECTION", "LEDGER_RETENTION_DAYS",
      "LEASE_SECONDS", "DATA_MAP_PATH", "SOURCE_TIMEOUT_SECONDS", "MINEOS_API_KEY", "MINEOS_API_BASE_URL", "MINEOS_TIMEOUT_SECONDS",
      "MINEOS_MAX_ATTEMPTS", "EXPORT_BUCKET", "SIGNED_URL_TTL_SECONDS", "INLINE_DATA_MAX_BYTES",
      "SHOP_DATABASE_NAME", "SHOP_DATABASE_URL",
    ])
    error_message = "The collector's environment variable names differ from the application's settings (URL_SIGNING_KEY_FILE must never be set on Cloud Run)."
  }

  assert {
    condition = (
      [for env in module.ingress.service.template[0].containers[0].env : env.value if env.name == "FUNCTION_TARGET"] == ["ingress"]
      && [for env in module.collector.service.template[0].containers[0].env : env.value if env.name == "FUNCTION_TARGET"] == ["collector"]
    )
    error_message = "FUNCTION_TARGET must be ingress and collector."
  }

  assert {
    condition = (
      [for env in module.collector.service.template[0].containers[0].env : env.value if env.name == "EXPORT_BUCKET"] == [google_storage_bucket.exports.name]
      && [for env in module.ingress.service.template[0].containers[0].env : env.value if env.name == "REQUESTS_TOPIC"] == [google_pubsub_topic.requests.name]
    )
    error_message = "EXPORT_BUCKET and REQUESTS_TOPIC must name the bucket and the topic Terraform created."
  }

  assert {
    condition     = !contains([for env in module.ingress.service.template[0].containers[0].env : env.name], "MINEOS_API_KEY")
    error_message = "The ingress must not receive the MineOS API key."
  }

  assert {
    condition     = !contains([for env in module.collector.service.template[0].containers[0].env : env.name], "MINE_SIGNING_SECRETS")
    error_message = "The collector must not receive the signing secrets."
  }

  assert {
    condition = alltrue([
      for service in [module.ingress.service, module.collector.service] :
      service.template[0].volumes[0].secret[0].secret == google_secret_manager_secret.integration["data_map"].secret_id
      && "${service.template[0].containers[0].volume_mounts[0].mount_path}/${service.template[0].volumes[0].secret[0].items[0].path}" == one([for env in service.template[0].containers[0].env : env.value if env.name == "DATA_MAP_PATH"])
    ])
    error_message = "Both services must mount the data map secret as the file DATA_MAP_PATH names."
  }

  assert {
    condition = (
      module.ingress.service.template[0].service_account == google_service_account.ingress.email
      && module.collector.service.template[0].service_account == google_service_account.collector.email
    )
    error_message = "Each service must run as its own service account."
  }

  assert {
    condition     = module.collector.service.template[0].timeout == "600s" && google_pubsub_subscription.requests.ack_deadline_seconds == 600
    error_message = "The collector's request timeout and the ack deadline must both be collector_timeout_seconds."
  }

  assert {
    condition     = tonumber(one([for env in module.collector.service.template[0].containers[0].env : env.value if env.name == "LEASE_SECONDS"])) > 600
    error_message = "LEASE_SECONDS must outlast the collector's request timeout."
  }

  assert {
    condition = (
      output.mineos_copy_url == "https://mineos-ingress-test.a.run.app/copy"
      && output.mineos_delete_url == "https://mineos-ingress-test.a.run.app/delete"
      && output.mineos_preview_url == "https://mineos-ingress-test.a.run.app/preview"
    )
    error_message = "The three URLs to paste into MineOS must be the ingress's /copy, /delete and /preview."
  }
}

run "requests_are_pushed_to_the_collector_with_oidc" {
  command = plan

  assert {
    condition = (
      google_pubsub_subscription.requests.topic == google_pubsub_topic.requests.id
      && google_pubsub_subscription.requests.push_config[0].push_endpoint == "https://mineos-collector-test.a.run.app/requests"
    )
    error_message = "The requests subscription must push the requests topic to the collector's /requests."
  }

  assert {
    condition = alltrue([
      for subscription in [google_pubsub_subscription.requests, google_pubsub_subscription.dead_letters] :
      subscription.push_config[0].oidc_token[0].service_account_email == google_service_account.pubsub_push.email
      && subscription.push_config[0].oidc_token[0].audience == "https://mineos-collector-test.a.run.app"
    ])
    error_message = "Pushes must carry an OIDC token of the push service account for the collector's URL."
  }

  assert {
    condition = (
      google_pubsub_subscription.requests.retry_policy[0].minimum_backoff == "10s"
      && google_pubsub_subscription.requests.retry_policy[0].maximum_backoff == "600s"
      && length(google_pubsub_subscription.dead_letters.retry_policy) == 1
    )
    error_message = "Both subscriptions must back off exponentially (10s to 600s by default)."
  }

  assert {
    condition = alltrue([
      for subscription in [google_pubsub_subscription.requests, google_pubsub_subscription.dead_letters] :
      subscription.expiration_policy[0].ttl == ""
    ])
    error_message = "The subscriptions must never expire for inactivity."
  }

  assert {
    condition = anytrue([
      for grant in google_service_account_iam_member.grants :
      grant.service_account_id == google_service_account.pubsub_push.name && grant.role == "roles/iam.serviceAccountTokenCreator"
      && grant.member == "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
    ])
    error_message = "The Pub/Sub service agent must be able to mint OIDC tokens as the push identity."
  }
}

run "each_identity_holds_only_what_it_needs" {
  command = plan

  assert {
    condition = [
      for grant in google_pubsub_topic_iam_member.grants : "${grant.topic} ${grant.role}"
      if grant.member == google_service_account.ingress.member
    ] == ["${google_pubsub_topic.requests.id} roles/pubsub.publisher"]
    error_message = "The ingress must hold exactly publisher on the requests topic."
  }

  assert {
    condition = toset([
      for grant in google_secret_manager_secret_iam_member.grants : grant.secret_id
      if grant.member == google_service_account.ingress.member
    ]) == toset([google_secret_manager_secret.integration["signing_secrets"].secret_id, google_secret_manager_secret.integration["data_map"].secret_id])
    error_message = "The ingress must read exactly the signing secrets and the data map."
  }

  assert {
    condition = toset([
      for grant in google_secret_manager_secret_iam_member.grants : grant.secret_id
      if grant.member == google_service_account.collector.member
    ]) == toset([google_secret_manager_secret.integration["mineos_api_key"].secret_id, google_secret_manager_secret.integration["data_map"].secret_id])
    error_message = "The collector must read exactly the MineOS API key and the data map."
  }

  assert {
    condition = {
      for key, grant in google_secret_manager_secret_iam_member.data_stores : key => "${grant.member} ${grant.secret_id}"
      } == {
      "collector/SHOP_DATABASE_URL" = "${google_service_account.collector.member} shop-database-url"
      "ingress/SHOP_DATABASE_URL"   = "${google_service_account.ingress.member} shop-database-url-read-only"
    }
    error_message = "Each service must read exactly the data-store secrets it is given (the ingress its read-only ones)."
  }

  assert {
    condition = (
      [for env in module.ingress.service.template[0].containers[0].env : env.value_source[0].secret_key_ref[0].secret if env.name == "SHOP_DATABASE_URL"] == ["shop-database-url-read-only"]
      && [for env in module.collector.service.template[0].containers[0].env : env.value_source[0].secret_key_ref[0].secret if env.name == "SHOP_DATABASE_URL"] == ["shop-database-url"]
    )
    error_message = "The data map's secret variables must come from each service's own secret."
  }

  assert {
    condition = anytrue([
      for grant in google_service_account_iam_member.grants :
      grant.service_account_id == google_service_account.collector.name
      && grant.member == google_service_account.collector.member
      && grant.role == "roles/iam.serviceAccountTokenCreator"
    ])
    error_message = "The collector must be able to signBlob as itself (keyless signed URLs)."
  }

  assert {
    condition = toset([for grant in google_storage_bucket_iam_member.grants : "${grant.member} ${grant.role}"]) == toset([
      "${google_service_account.collector.member} roles/storage.objectCreator",
      "${google_service_account.collector.member} roles/storage.objectViewer",
    ])
    error_message = "Only the collector may use the exports bucket: create and read objects, not delete or overwrite them."
  }

  assert {
    condition = alltrue([
      for grant in google_service_account_iam_member.grants :
      grant.member != google_service_account.ingress.member
    ])
    error_message = "The ingress must not be able to act as any service account."
  }
}

run "personal_data_uses_cmek_when_given" {
  command = plan

  variables {
    kms_key_name = "projects/mineos-test-project/locations/europe-west1/keyRings/mineos/cryptoKeys/exports"
  }

  assert {
    condition = (
      google_storage_bucket.exports.encryption[0].default_kms_key_name == var.kms_key_name
      && google_pubsub_topic.requests.kms_key_name == var.kms_key_name
      && google_pubsub_topic.dead_letter.kms_key_name == var.kms_key_name
    )
    error_message = "The exports bucket and both topics must use the given CMEK key."
  }

  assert {
    condition = (
      keys(google_kms_crypto_key_iam_member.service_agents) == ["pubsub", "storage"]
      && alltrue([for grant in google_kms_crypto_key_iam_member.service_agents : grant.role == "roles/cloudkms.cryptoKeyEncrypterDecrypter"])
    )
    error_message = "The Cloud Storage and Pub/Sub service agents must be able to use the CMEK key."
  }
}

run "existing_firestore_database_is_used" {
  command = plan

  variables {
    create_firestore_database = false
    ledger_collection         = "privacy_ledger"
  }

  assert {
    condition     = length(google_firestore_database.ledger) == 0
    error_message = "create_firestore_database = false must not create the database."
  }

  assert {
    condition     = google_firestore_field.ledger_expiry.collection == "privacy_ledger" && length(google_firestore_field.ledger_expiry.ttl_config) == 1
    error_message = "The TTL policy follows ledger_collection."
  }
}
