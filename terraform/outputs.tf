# Everything templates/build.sh and templates/run.sh need (they read these with `terraform output`).

output "project_id" {
  description = "Project of every resource."
  value       = var.project_id
}

output "region" {
  description = "Region of the Dataflow jobs, buckets and keys."
  value       = var.region
}

output "image_repository" {
  description = "Docker repository path for the launcher/worker image (append /IMAGE:TAG)."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "worker_service_account" {
  description = "Service account of the launcher VM and the workers (--service-account-email)."
  value       = google_service_account.worker.email
}

output "dataflow_kms_key" {
  description = "KMS key for Dataflow job state and worker disks (--dataflow-kms-key)."
  value       = google_kms_crypto_key.key["dataflow"].id
}

output "subnetwork" {
  description = "Subnetwork of the private-IP workers (--subnetwork)."
  value       = google_compute_subnetwork.dataflow.self_link
}

output "staging_location" {
  description = "Dataflow staging location (--staging-location)."
  value       = "gs://${google_storage_bucket.data["temp"].name}/staging"
}

output "temp_location" {
  description = "Dataflow temp location (--temp-location)."
  value       = "gs://${google_storage_bucket.data["temp"].name}/tmp"
}

output "template_spec_path" {
  description = "Where templates/build.sh writes the Flex Template spec."
  value       = local.template_spec_path
}

output "input_bucket" {
  description = "Bucket of studies to de-identify (input=gs://BUCKET/prefix/)."
  value       = google_storage_bucket.data["input"].name
}

output "output_bucket" {
  description = "Bucket of de-identified results (output=gs://BUCKET/run/)."
  value       = google_storage_bucket.data["output"].name
}

output "temp_bucket" {
  description = "Bucket of Dataflow staging/temp files and template specs."
  value       = google_storage_bucket.data["temp"].name
}

output "linkage_bucket" {
  description = "Bucket of the linkage tables (retention policy; workers create only, reidentification_readers read)."
  value       = google_storage_bucket.linkage.name
}

output "access_log_bucket" {
  description = "Bucket receiving the other buckets' access logs."
  value       = google_storage_bucket.access_logs.name
}

output "deid_key_secret" {
  description = "deid_key_secret parameter: version 1 of the key's secret (add it first: README \"Security model\")."
  value       = "${google_secret_manager_secret.deid_key.id}/versions/1"
}

output "linkage_output_prefix" {
  description = "Prefix for linkage_output; append one new folder per run (tables are never replaced)."
  value       = "gs://${google_storage_bucket.linkage.name}/"
}

output "healthcare_export_output_prefix" {
  description = "Prefix for healthcare_export_output (the only place the Healthcare API may write); append a folder per run."
  value       = "gs://${google_storage_bucket.data["output"].name}/${local.healthcare_export_prefix}"
}

output "data_access_log_bucket" {
  description = "Log bucket holding the Data Access audit logs of Cloud Storage, Secret Manager and the Healthcare API."
  value       = google_logging_project_bucket_config.data_access.id
}

output "healthcare_dataset" {
  description = "Healthcare dataset (Google-managed keys: the API cannot de-identify CMEK datasets)."
  value       = google_healthcare_dataset.deid.id
}

output "healthcare_source_store" {
  description = "healthcare_source_store parameter."
  value       = google_healthcare_dicom_store.store["source"].id
}

output "healthcare_destination_store" {
  description = "healthcare_destination_store parameter."
  value       = google_healthcare_dicom_store.store["destination"].id
}

output "dicom_notification_topic" {
  description = "Pub/Sub topic both DICOM stores notify."
  value       = google_pubsub_topic.dicom_notifications.id
}

output "flex_template_job_id" {
  description = "Id of the Terraform-managed job, when run_flex_template_job is true."
  value       = one(google_dataflow_flex_template_job.deid[*].job_id)
}
