# One image, two services: FUNCTION_TARGET picks the functions-framework target.

module "ingress" {
  source = "./modules/cloud_run_service"

  project_id            = var.project_id
  region                = var.region
  name                  = local.ingress_service_name
  service_account_email = google_service_account.ingress.email
  image                 = var.image

  # MineOS calls from the internet and cannot present a Google identity: X-Mine-Signature, checked
  # by the ingress on the raw body, is the authentication.
  ingress               = "INGRESS_TRAFFIC_ALL"
  allow_unauthenticated = true

  env = local.ingress_env
  secret_env = merge(
    { for name, secret in var.ingress_data_store_secrets : name => { secret = secret } },
    { MINE_SIGNING_SECRETS = { secret = google_secret_manager_secret.integration["signing_secrets"].secret_id } },
  )
  secret_files = {
    data-map = {
      secret     = google_secret_manager_secret.integration["data_map"].secret_id
      mount_path = local.data_map_mount_path
      file_name  = local.data_map_file_name
    }
  }

  developer_members = { deployer = google_service_account.deployer.member }

  timeout_seconds                  = var.ingress_timeout_seconds
  max_instance_count               = var.ingress_max_instances
  max_instance_request_concurrency = var.ingress_concurrency
  cpu                              = var.ingress_cpu
  memory                           = var.ingress_memory
  deletion_protection              = var.deletion_protection

  # A revision can start only once its identity may read its secrets.
  depends_on = [
    google_secret_manager_secret_iam_member.grants,
    google_secret_manager_secret_iam_member.data_stores,
  ]
}

module "collector" {
  source = "./modules/cloud_run_service"

  project_id            = var.project_id
  region                = var.region
  name                  = local.collector_service_name
  service_account_email = google_service_account.collector.email
  image                 = var.image

  # Reachable only from inside the project (Pub/Sub push counts as internal), and only the push
  # identity may invoke it.
  ingress               = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  allow_unauthenticated = false
  invoker_members       = { pubsub_push = google_service_account.pubsub_push.member }

  env = local.collector_env
  secret_env = merge(
    { for name, secret in var.collector_data_store_secrets : name => { secret = secret } },
    { MINEOS_API_KEY = { secret = google_secret_manager_secret.integration["mineos_api_key"].secret_id } },
  )
  secret_files = {
    data-map = {
      secret     = google_secret_manager_secret.integration["data_map"].secret_id
      mount_path = local.data_map_mount_path
      file_name  = local.data_map_file_name
    }
  }

  developer_members = { deployer = google_service_account.deployer.member }

  timeout_seconds                  = var.collector_timeout_seconds
  max_instance_count               = var.collector_max_instances
  max_instance_request_concurrency = var.collector_concurrency
  cpu                              = var.collector_cpu
  memory                           = var.collector_memory
  deletion_protection              = var.deletion_protection

  depends_on = [
    google_secret_manager_secret_iam_member.grants,
    google_secret_manager_secret_iam_member.data_stores,
  ]
}
