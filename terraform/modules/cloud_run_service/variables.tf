variable "project_id" {
  type        = string
  description = "Project of the service."
}

variable "region" {
  type        = string
  description = "Region of the service."
}

variable "name" {
  type        = string
  description = "Name of the Cloud Run service."

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$", var.name))
    error_message = "name must be at most 49 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "service_account_email" {
  type        = string
  description = "Service account the service runs as."
}

variable "image" {
  type        = string
  description = "Image the service is created with; later deployments (Cloud Build) change it and Terraform ignores the difference."
}

variable "ingress" {
  type        = string
  description = "Where requests may come from: INGRESS_TRAFFIC_ALL (internet), INGRESS_TRAFFIC_INTERNAL_ONLY (VPC, Pub/Sub, Google services of the project), INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "allow_unauthenticated" {
  type        = bool
  description = "Let anyone invoke the service without a Google identity (turns off Cloud Run's invoker IAM check)."
  default     = false
}

variable "invoker_members" {
  type        = map(string)
  description = "Principals granted roles/run.invoker on this service, keyed by a static name (\"serviceAccount:...\")."
  default     = {}

  validation {
    condition     = alltrue([for member in values(var.invoker_members) : !contains(["allUsers", "allAuthenticatedUsers"], member)])
    error_message = "invoker_members must not be allUsers or allAuthenticatedUsers; use allow_unauthenticated for a public service."
  }
}

variable "developer_members" {
  type        = map(string)
  description = "Principals granted roles/run.developer on this service (deploy new revisions), keyed by a static name."
  default     = {}
}

variable "env" {
  type        = map(string)
  description = "Plain environment variables (never secrets)."
  default     = {}
}

variable "secret_env" {
  type = map(object({
    secret  = string
    version = optional(string, "latest")
  }))
  description = "Environment variables read from Secret Manager: name => secret ID and version."
  default     = {}

  validation {
    condition     = length(setintersection(keys(var.secret_env), keys(var.env))) == 0
    error_message = "A variable cannot be both in env and in secret_env."
  }
}

variable "secret_files" {
  type = map(object({
    secret     = string
    version    = optional(string, "latest")
    mount_path = string
    file_name  = string
  }))
  description = "Secret Manager secrets mounted as files: volume name => secret, directory and file name."
  default     = {}
}

variable "timeout_seconds" {
  type        = number
  description = "Request timeout."

  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 3600
    error_message = "timeout_seconds must be from 1 to 3600."
  }
}

variable "max_instance_count" {
  type        = number
  description = "Maximum number of instances."
}

variable "max_instance_request_concurrency" {
  type        = number
  description = "Concurrent requests per instance."
}

variable "cpu" {
  type        = string
  description = "CPU limit of one instance."
}

variable "memory" {
  type        = string
  description = "Memory limit of one instance."
}

variable "health_check_path" {
  type        = string
  description = "HTTP path of the startup probe."
  default     = "/healthz"
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to delete the service through Terraform."
  default     = true
}
