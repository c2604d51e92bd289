# One identity per job, each holding only the roles in iam.tf.

resource "google_service_account" "ingress" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-ingress"
  display_name = "MineOS integration: ingress (Cloud Run)"
  description  = "Verifies MineOS calls and publishes them to Pub/Sub."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "collector" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-collector"
  display_name = "MineOS integration: collector (Cloud Run)"
  description  = "Runs the data map, writes exports, signs their URLs and reports to MineOS."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "pubsub_push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-pubsub-push"
  display_name = "MineOS integration: Pub/Sub push identity"
  description  = "Identity of the OIDC tokens on Pub/Sub pushes to the collector; may only invoke the collector."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "deployer" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-deployer"
  display_name = "MineOS integration: Cloud Build deployer"
  description  = "Runs cloudbuild.yaml: pushes the image and deploys it to the two services."
  depends_on   = [google_project_service.enabled]
}

# The Pub/Sub service agent (Google-managed, one per project) forwards dead letters and mints the
# push OIDC tokens. Its address follows from the project number.
data "google_project" "this" {
  project_id = var.project_id
}

locals {
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}
