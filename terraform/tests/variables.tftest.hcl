# Values that would break the integration are refused before anything is planned. Each run sets
# several bad values at once; every listed variable must report its own validation error.

mock_provider "google" {
  source = "./tests/mocks"
}

variables {
  project_id = "mineos-test-project"
  region     = "europe-west1"
  image      = "europe-west1-docker.pkg.dev/mineos-test-project/mineos/mineos-integration:test"
}

run "values_outside_the_allowed_sets_are_refused" {
  command = plan

  variables {
    signature_algorithm   = "md5"
    signature_encoding    = "base32"
    log_level             = "TRACE"
    mineos_api_base_url   = "https://mineos.example.com"
    image                 = "europe-west1-docker.pkg.dev/mineos-test-project/mineos/mineos-integration"
    max_delivery_attempts = 4
    data_store_env        = { SHOP_DATABASE_PASSWORD = "hunter2" }
  }

  expect_failures = [
    var.signature_algorithm,
    var.signature_encoding,
    var.log_level,
    var.mineos_api_base_url,
    var.image,
    var.max_delivery_attempts,
    var.data_store_env,
  ]
}

run "values_beyond_the_platform_limits_are_refused" {
  command = plan

  variables {
    # Pub/Sub's largest ack deadline is 600 s.
    collector_timeout_seconds = 900
    # V4 signed URLs live at most 7 days.
    signed_url_ttl_seconds = 604801
  }

  expect_failures = [
    var.collector_timeout_seconds,
    var.signed_url_ttl_seconds,
  ]
}

# A validation that refers to another variable is skipped while that variable is itself invalid,
# hence a run of its own with valid partners.
run "values_that_contradict_each_other_are_refused" {
  command = plan

  variables {
    # A lease shorter than the collector's timeout (600 s) lets a second worker start too early.
    lease_seconds = 300
    # The exports must outlive their links (3 days by default).
    export_retention_days = 2
    # The backoff cannot shrink.
    retry_minimum_backoff_seconds = 60
    retry_maximum_backoff_seconds = 30
  }

  expect_failures = [
    var.lease_seconds,
    var.export_retention_days,
    var.retry_maximum_backoff_seconds,
  ]
}

run "good_values_are_accepted" {
  command = plan

  variables {
    signature_algorithm       = "sha512"
    signature_encoding        = "hex"
    mineos_api_base_url       = "https://api.us.portal.saymine.com"
    max_delivery_attempts     = 5
    collector_timeout_seconds = 300
    lease_seconds             = 360
    signed_url_ttl_seconds    = 604800
    export_retention_days     = 7
  }
}
