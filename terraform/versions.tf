terraform {
  # 1.9: variable validations that refer to other variables.
  required_version = ">= 1.9"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.x: invoker_iam_disabled and deletion_protection on Cloud Run v2 services.
      version = ">= 6.20, < 9"
    }
  }

  # The state bucket is created once by hand (docs/deploy.md, step 1) and passed at init:
  #   terraform init -backend-config="bucket=<state bucket>"
  backend "gcs" {
    prefix = "mineos-integration"
  }
}

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = local.labels
}
