# Healthcare API: one dataset holding the source and destination DICOM stores, and a Pub/Sub topic
# that both stores notify when instances arrive.
#
# The dataset uses Google-managed encryption keys on purpose: the Healthcare API cannot de-identify
# a dataset encrypted with a customer-managed key (CMEK), and dicomStores.deidentify is what the
# pipeline's --healthcare_source_store mode calls. Everything the pipeline writes elsewhere (buckets,
# image, topic, Dataflow state and disks) is CMEK.
resource "google_healthcare_dataset" "deid" {
  name     = "${var.name_prefix}-dataset"
  location = local.healthcare_location

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "dicom_notifications" {
  name         = "${var.name_prefix}-dicom-notifications"
  kms_key_name = google_kms_crypto_key.key["pubsub"].id
  labels       = local.labels

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

resource "google_healthcare_dicom_store" "store" {
  for_each = toset(["source", "destination"])

  name    = each.key
  dataset = google_healthcare_dataset.deid.id
  labels  = merge(local.labels, { role = each.key })

  notification_config {
    pubsub_topic = google_pubsub_topic.dicom_notifications.id
  }

  depends_on = [google_pubsub_topic_iam_member.healthcare_publisher]
}

# The Healthcare service agent publishes the notifications ...
resource "google_pubsub_topic_iam_member" "healthcare_publisher" {
  topic  = google_pubsub_topic.dicom_notifications.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_project_service_identity.agent["healthcare.googleapis.com"].email}"
}

# ... and writes dicomStores.export results (--healthcare_export_output) under one prefix of the
# output bucket: create only (security.tf adds read of the import prefix of the input bucket).
resource "google_storage_bucket_iam_member" "healthcare_export" {
  bucket = google_storage_bucket.data["output"].name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${google_project_service_identity.agent["healthcare.googleapis.com"].email}"

  condition {
    title       = "healthcare-export-prefix"
    description = "dicomStores.export writes only under gs://<output bucket>/${local.healthcare_export_prefix}."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.data["output"].name}/objects/${local.healthcare_export_prefix}\")"
  }
}
