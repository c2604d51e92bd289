output "name" {
  description = "Name of the service."
  value       = google_cloud_run_v2_service.this.name
}

output "uri" {
  description = "HTTPS URL of the service."
  value       = google_cloud_run_v2_service.this.uri
}

output "service" {
  description = "The whole google_cloud_run_v2_service resource, for callers and tests that check its settings."
  value       = google_cloud_run_v2_service.this
}

output "invoker_members" {
  description = "Principals holding roles/run.invoker on the service through this module."
  value       = [for binding in google_cloud_run_v2_service_iam_member.invoker : binding.member]
}

output "iam_roles" {
  description = "Every role this module grants on the service."
  value = concat(
    [for binding in google_cloud_run_v2_service_iam_member.invoker : binding.role],
    [for binding in google_cloud_run_v2_service_iam_member.developer : binding.role],
  )
}
