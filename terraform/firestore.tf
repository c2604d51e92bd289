locals {
  firestore_database = "(default)"
}

# The ledger. The application uses the (default) database.
resource "google_firestore_database" "ledger" {
  count = var.create_firestore_database ? 1 : 0

  project                 = var.project_id
  name                    = local.firestore_database
  location_id             = coalesce(var.firestore_location_id, var.region)
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"

  depends_on = [google_project_service.enabled]
}

# TTL policy: Firestore deletes a ledger document some time (typically within a day) after its
# expires_at timestamp (set by the services to now + LEDGER_RETENTION_DAYS).
resource "google_firestore_field" "ledger_expiry" {
  project    = var.project_id
  database   = local.firestore_database
  collection = var.ledger_collection
  field      = "expires_at"

  ttl_config {}

  depends_on = [google_firestore_database.ledger]
}
