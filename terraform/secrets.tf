# The secrets exist here; their values never do (nor in the state): the company adds versions with
# `gcloud secrets versions add` (docs/deploy.md, step 3). The services read the "latest" version.

locals {
  secrets = {
    signing_secrets = {
      secret_id   = "${var.name_prefix}-signing-secrets"
      description = "MINE_SIGNING_SECRETS of the ingress: the X-Mine-Signature secret(s), comma-separated during a rotation."
    }
    mineos_api_key = {
      secret_id   = "${var.name_prefix}-api-key"
      description = "MINEOS_API_KEY of the collector: the MineOS API key for status updates."
    }
    data_map = {
      secret_id   = "${var.name_prefix}-data-map"
      description = "The data map (YAML), mounted into both services at ${local.data_map_path}."
    }
  }
}

resource "google_secret_manager_secret" "integration" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = each.value.secret_id
  annotations = {
    purpose = each.value.description
  }

  replication {
    dynamic "auto" {
      for_each = length(var.secret_replica_locations) == 0 ? [1] : []
      content {}
    }
    dynamic "user_managed" {
      for_each = length(var.secret_replica_locations) == 0 ? [] : [1]
      content {
        dynamic "replicas" {
          for_each = var.secret_replica_locations
          content {
            location = replicas.value
          }
        }
      }
    }
  }

  depends_on = [google_project_service.enabled]
}
