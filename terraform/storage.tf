# Exports: personal data, reachable only through the V4 signed URLs the collector hands to MineOS,
# deleted after var.export_retention_days.

resource "google_storage_bucket" "exports" {
  # checkov:skip=CKV_GCP_62:Usage-log buckets would copy object names (which carry MineOS ids) into another bucket without this one's retention; reads are audited through Cloud Audit Logs Data Access logs instead (docs/deploy.md, "Audit").
  # checkov:skip=CKV_GCP_78:Versioning would keep deleted or replaced exports (personal data) beyond export_retention_days; exports are written once (create-only) and never overwritten.
  project                     = var.project_id
  name                        = local.exports_bucket_name
  location                    = coalesce(var.exports_bucket_location, var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  lifecycle_rule {
    condition {
      age = var.export_retention_days
    }
    action {
      type = "Delete"
    }
  }

  # A deleted export is gone: soft delete would keep personal data past its retention.
  soft_delete_policy {
    retention_duration_seconds = 0
  }

  # Exports are written once and never overwritten; old versions would only outlive the retention.
  versioning {
    enabled = false
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_kms_crypto_key_iam_member.service_agents,
  ]
}
