locals {
  bucket_prefix       = var.bucket_prefix != "" ? var.bucket_prefix : "${var.project_id}-${var.name_prefix}"
  healthcare_location = var.healthcare_location != "" ? var.healthcare_location : var.region
  labels              = merge({ app = "deid-pipeline", managed-by = "terraform" }, var.labels)
  project_number      = data.google_project.this.number

  # Service agents that use the keys. Storage's comes from its data source, which creates it.
  dataflow_agent = "serviceAccount:service-${local.project_number}@dataflow-service-producer-prod.iam.gserviceaccount.com"
  compute_agent  = "serviceAccount:service-${local.project_number}@compute-system.iam.gserviceaccount.com"
  storage_agent  = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"

  # The names of the Flex Template's parameters, read from the generated metadata.
  template_parameter_names = [for p in jsondecode(file("${path.module}/../templates/metadata.json")).parameters : p.name]
}

data "google_project" "this" {
  project_id = var.project_id
}

data "google_storage_project_service_account" "this" {
  project = var.project_id

  depends_on = [google_project_service.enabled]
}

resource "google_project_service" "enabled" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudkms.googleapis.com",
    "compute.googleapis.com",
    "dataflow.googleapis.com",
    "healthcare.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  project = var.project_id
  service = each.value
  # Turning an API off on destroy would break anything else in the project that uses it.
  disable_on_destroy = false
}

# Service agents that exist only once asked for; created here so the key grants below can name them.
resource "google_project_service_identity" "agent" {
  provider = google-beta
  for_each = toset(["artifactregistry.googleapis.com", "healthcare.googleapis.com", "pubsub.googleapis.com", "secretmanager.googleapis.com"])

  project = var.project_id
  service = each.value

  depends_on = [google_project_service.enabled]
}
