# Optional: run the Flex Template from Terraform (var.run_flex_template_job, default false).
#
# Off by default because a batch job ends: Terraform then sees the finished job as gone and creates
# it again on every `terraform apply`, de-identifying the same input once more. Prefer
# templates/run.sh; turn this on only for a one-off run and off again afterwards.

locals {
  template_spec_path = var.template_spec_path != "" ? var.template_spec_path : "gs://${google_storage_bucket.data["temp"].name}/templates/deid-pipeline.json"

  # Parameters this configuration passes itself; var.job_parameters adds to or overrides them.
  # Every key must be a parameter of templates/metadata.json (checked below and by tests).
  job_default_parameters = {
    output = "gs://${google_storage_bucket.data["output"].name}/${var.job_name}/"
  }
  job_parameters = merge(local.job_default_parameters, var.job_parameters)
}

resource "google_dataflow_flex_template_job" "deid" {
  provider = google-beta
  count    = var.run_flex_template_job ? 1 : 0

  name                    = var.job_name
  region                  = var.region
  container_spec_gcs_path = local.template_spec_path
  parameters              = local.job_parameters
  service_account_email   = google_service_account.worker.email
  kms_key_name            = google_kms_crypto_key.key["dataflow"].id
  ip_configuration        = "WORKER_IP_PRIVATE"
  subnetwork              = google_compute_subnetwork.dataflow.self_link
  staging_location        = "gs://${google_storage_bucket.data["temp"].name}/staging"
  temp_location           = "gs://${google_storage_bucket.data["temp"].name}/tmp"
  max_workers             = var.max_workers
  machine_type            = var.worker_machine_type
  on_delete               = "cancel"
  labels                  = local.labels

  lifecycle {
    precondition {
      condition     = alltrue([for name in keys(local.job_parameters) : contains(local.template_parameter_names, name)])
      error_message = "Every job parameter must be a parameter of templates/metadata.json."
    }
  }

  depends_on = [
    google_kms_crypto_key_iam_member.dataflow_agents,
    google_project_iam_member.worker_dataflow,
    google_storage_bucket_iam_member.worker,
    google_storage_bucket_iam_member.worker_staging,
    google_storage_bucket_iam_member.worker_linkage,
    google_secret_manager_secret_iam_member.worker_key_reader,
    google_artifact_registry_repository_iam_member.worker_reader,
  ]
}
