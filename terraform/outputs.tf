output "mineos_copy_url" {
  description = "Paste into MineOS (custom system) as the Copy URL."
  value       = "${module.ingress.uri}/copy"
}

output "mineos_delete_url" {
  description = "Paste into MineOS (custom system) as the Delete URL."
  value       = "${module.ingress.uri}/delete"
}

output "mineos_preview_url" {
  description = "Paste into MineOS (custom system) as the Preview URL."
  value       = "${module.ingress.uri}/preview"
}

output "ingress_url" {
  description = "Base URL of the ingress (health check: GET /healthz)."
  value       = module.ingress.uri
}

output "collector_url" {
  description = "Base URL of the collector (internal only; invoked by Pub/Sub push)."
  value       = module.collector.uri
}

output "image_repository" {
  description = "Artifact Registry path images are pushed to: <this>/mineos-integration:<tag>."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "exports_bucket" {
  description = "Bucket of the exports."
  value       = google_storage_bucket.exports.name
}

output "requests_topic" {
  description = "Pub/Sub topic between ingress and collector."
  value       = google_pubsub_topic.requests.name
}

output "dead_letter_topic" {
  description = "Pub/Sub topic of requests that failed max_delivery_attempts times."
  value       = google_pubsub_topic.dead_letter.name
}

output "secret_ids" {
  description = "Secret Manager secrets to add versions to (docs/deploy.md, step 3)."
  value       = { for key, secret in google_secret_manager_secret.integration : key => secret.secret_id }
}

output "service_accounts" {
  description = "E-mail addresses of the integration's service accounts."
  value = {
    ingress     = google_service_account.ingress.email
    collector   = google_service_account.collector.email
    pubsub_push = google_service_account.pubsub_push.email
    deployer    = google_service_account.deployer.email
  }
}

output "cloud_build_substitutions" {
  description = "Substitutions for the Cloud Build trigger of cloudbuild.yaml."
  value = {
    _REGION            = var.region
    _REPOSITORY        = google_artifact_registry_repository.images.repository_id
    _INGRESS_SERVICE   = module.ingress.name
    _COLLECTOR_SERVICE = module.collector.name
  }
}
