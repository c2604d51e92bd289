# Values the mocked google provider returns where random strings would not do.

mock_data "google_project" {
  defaults = {
    number = "123456789012"
  }
}
