resource "google_artifact_registry_repository" "images" {
  # checkov:skip=CKV_GCP_84:The image holds code only, no personal data or secrets; Google-managed encryption at rest is enough here (var.kms_key_name protects the stores that hold personal data).
  project       = var.project_id
  location      = var.region
  repository_id = var.artifact_repository_id
  format        = "DOCKER"
  description   = "Images of the MineOS integration (cloudbuild.yaml pushes here)."

  docker_config {
    # Every build pushes a new tag; a tag never moves to other contents.
    immutable_tags = true
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.artifact_keep_recent_images
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "${var.artifact_delete_after_days * 86400}s"
    }
  }

  depends_on = [google_project_service.enabled]
}
