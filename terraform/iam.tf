# The Dataflow worker service account (also the Flex Template launcher VM's): least privilege.

resource "google_service_account" "worker" {
  account_id   = "${var.name_prefix}-worker"
  display_name = "De-identification pipeline Dataflow workers"
  description  = "Runs the Flex Template launcher and the Dataflow workers of the de-identification pipeline."
}

# The only project-level role: what a Dataflow worker needs to talk to the service.
resource "google_project_iam_member" "worker_dataflow" {
  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = google_service_account.worker.member
}

# Object roles on each bucket, nothing project-wide. objectUser (read, write, delete, list) only on
# temp, where Beam and the WSI scratch write temporary files and delete them. On the output bucket,
# which holds the records, objectCreator: create, never read, replace or delete; security.tf adds
# read and delete of the ".part" staging files only. legacyBucketReader adds storage.buckets.get,
# which Beam calls on temp_location and on outputs before writing, and storage.objects.list.
locals {
  worker_bucket_roles = {
    "input-viewer"         = { bucket = "input", role = "roles/storage.objectViewer" }
    "output-creator"       = { bucket = "output", role = "roles/storage.objectCreator" }
    "output-bucket-reader" = { bucket = "output", role = "roles/storage.legacyBucketReader" }
    "temp-user"            = { bucket = "temp", role = "roles/storage.objectUser" }
    "temp-bucket-reader"   = { bucket = "temp", role = "roles/storage.legacyBucketReader" }
  }
}

resource "google_storage_bucket_iam_member" "worker" {
  for_each = local.worker_bucket_roles

  bucket = google_storage_bucket.data[each.value.bucket].name
  role   = each.value.role
  member = google_service_account.worker.member
}

# Pull the image the workers run.
resource "google_artifact_registry_repository_iam_member" "worker_reader" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.worker.member
}

# Healthcare API: exactly the calls the pipeline makes (deid/cloud/healthcare.py):
# dicomStores.get (pre-flight check of both stores), dicomStores.deidentify (on the source) with
# dicomWebWrite (on the destination, required by deidentify), DICOMweb search/retrieve and STOW,
# dicomStores.export (--healthcare_export_output) and operations.get (polling). Bound on the dataset
# only, because operations are dataset resources.
resource "google_project_iam_custom_role" "healthcare_deid" {
  role_id     = replace("${var.name_prefix}_healthcare_deid", "-", "_")
  title       = "De-identification pipeline: Healthcare API"
  description = "DICOM store de-identification, DICOMweb read/write, export and operation polling."
  stage       = "GA"
  permissions = [
    "healthcare.dicomStores.deidentify",
    "healthcare.dicomStores.dicomWebRead",
    "healthcare.dicomStores.dicomWebWrite",
    "healthcare.dicomStores.export",
    "healthcare.dicomStores.get",
    "healthcare.operations.get",
  ]
}

resource "google_healthcare_dataset_iam_member" "worker" {
  dataset_id = google_healthcare_dataset.deid.id
  role       = google_project_iam_custom_role.healthcare_deid.id
  member     = google_service_account.worker.member
}
