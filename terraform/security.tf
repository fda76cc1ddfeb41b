# Least privilege on the two most sensitive objects, the pseudonym key and the linkage tables, and
# an audit trail of every access to them (README "Security model").
#
# - The key lives in Secret Manager (CMEK), created here without a value; workers may only read
#   that one secret (roles/secretmanager.secretAccessor) and read it in DoFn.setup().
# - Linkage tables go to a dedicated bucket under a retention policy: workers may create objects
#   there and list names, never read, replace or delete; only var.reidentification_readers read.
# - Records (audit/, dead_letter/, runs/) and outputs in the output bucket: workers create objects
#   (roles/storage.objectCreator, which cannot replace an existing name: that needs delete) and may
#   read and delete only staging files, the objects whose names end in ".part" (transforms/files.py
#   stages every output as OUTPUT/.tmp/<hex>.part and renames it by copy-then-delete). Records are
#   uploaded straight to their names, never staged (transforms/files.py write_record).
# - Data Access audit logs for Cloud Storage, Secret Manager and the Healthcare API, routed to a
#   locked, CMEK log bucket.
# - Optionally, a VPC Service Controls perimeter around the project's data services.

locals {
  linkage_bucket = "${local.bucket_prefix}-linkage"
  # The services whose Data Access logs say who read or wrote the key, the linkage and the data.
  audited_services = ["storage.googleapis.com", "secretmanager.googleapis.com", "healthcare.googleapis.com"]
  data_access_filter = join(" AND ", [
    "(log_id(\"cloudaudit.googleapis.com/data_access\") OR log_id(\"cloudaudit.googleapis.com/activity\"))",
    "protoPayload.serviceName=(${join(" OR ", [for s in local.audited_services : "\"${s}\""])})",
  ])
  # Where the Healthcare API exports to and imports from (dicomStores.export / .import).
  healthcare_export_prefix = "healthcare-export/"
  healthcare_import_prefix = "healthcare-import/"
  perimeter_services = [
    "artifactregistry.googleapis.com",
    "cloudkms.googleapis.com",
    "dataflow.googleapis.com",
    "healthcare.googleapis.com",
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]
}

# -- the pseudonym key ------------------------------------------------------------------------------

# No google_secret_manager_secret_version here: the value must never sit in Terraform state. Add it
# once, from a machine you trust (README "Security model"):
#   head -c 32 /dev/urandom | gcloud secrets versions add <name_prefix>-deid-key --data-file=-
resource "google_secret_manager_secret" "deid_key" {
  secret_id           = "${var.name_prefix}-deid-key"
  labels              = merge(local.labels, { purpose = "pseudonym-key" })
  deletion_protection = true

  replication {
    user_managed {
      replicas {
        location = var.region
        customer_managed_encryption {
          kms_key_name = google_kms_crypto_key.key["secret-manager"].id
        }
      }
    }
  }

  lifecycle {
    # Losing the key breaks every future link to earlier runs.
    prevent_destroy = true
  }

  depends_on = [google_kms_crypto_key_iam_member.secret_manager_agent]
}

resource "google_kms_crypto_key_iam_member" "secret_manager_agent" {
  crypto_key_id = google_kms_crypto_key.key["secret-manager"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_project_service_identity.agent["secretmanager.googleapis.com"].email}"
}

# The only grant on the key: workers (and the launcher VM, the same account) read it.
resource "google_secret_manager_secret_iam_member" "worker_key_reader" {
  secret_id = google_secret_manager_secret.deid_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.worker.member
}

# -- the linkage tables -----------------------------------------------------------------------------

resource "google_storage_bucket" "linkage" {
  #checkov:skip=CKV_GCP_78:Object Versioning cannot be enabled on a bucket with a retention policy; the retention policy is the stronger guarantee (no replace or delete at all).
  name                        = local.linkage_bucket
  location                    = upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = merge(local.labels, { purpose = "linkage" })

  # Every object must reach this age before anyone can delete or replace it.
  retention_policy {
    retention_period = var.linkage_retention_days * 86400
    is_locked        = var.lock_linkage_retention
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.key["storage"].id
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "linkage/"
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage_agent]
}

# Workers write linkage tables and list names (the launcher refuses a --linkage_output that already
# holds tables, since they are never replaced); they cannot read, replace or delete one.
resource "google_storage_bucket_iam_member" "worker_linkage" {
  for_each = toset(["roles/storage.objectCreator", "roles/storage.legacyBucketReader"])

  bucket = google_storage_bucket.linkage.name
  role   = each.value
  member = google_service_account.worker.member
}

# The people allowed to re-identify: read the linkage tables, nothing else. Every read is in the
# Data Access log below.
resource "google_storage_bucket_iam_member" "reidentification_readers" {
  for_each = toset(var.reidentification_readers)

  bucket = google_storage_bucket.linkage.name
  role   = "roles/storage.objectViewer"
  member = each.value
}

# -- records and outputs in the output bucket -------------------------------------------------------

# Reading and deleting staging files: objectCreator alone cannot finish the copy-then-delete rename.
resource "google_project_iam_custom_role" "staging" {
  role_id     = replace("${var.name_prefix}_staging", "-", "_")
  title       = "De-identification pipeline: staging files"
  description = "Read and delete the pipeline's own staging objects; bound only with a condition on their .part suffix."
  stage       = "GA"
  permissions = ["storage.objects.delete", "storage.objects.get"]
}

resource "google_storage_bucket_iam_member" "worker_staging" {
  bucket = google_storage_bucket.data["output"].name
  role   = google_project_iam_custom_role.staging.id
  member = google_service_account.worker.member

  condition {
    title       = "staging-files-only"
    description = "Only OUTPUT/.tmp/<hex>.part staging objects; never records or published outputs."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.data["output"].name}/objects/\") && resource.name.endsWith(\".part\")"
  }
}

# With --healthcare_source_store and --wsi_output_format dicom|both, the slides' DICOM outputs are
# read back to be stored in the source store. Records (.jsonl, .json, .csv) stay unreadable.
resource "google_storage_bucket_iam_member" "worker_dicom_reader" {
  bucket = google_storage_bucket.data["output"].name
  role   = "roles/storage.objectViewer"
  member = google_service_account.worker.member

  condition {
    title       = "dicom-outputs-only"
    description = "Read DICOM outputs (wsi/*.dcm for the Healthcare API branch); no record is a .dcm."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.data["output"].name}/objects/\") && resource.name.endsWith(\".dcm\")"
  }
}

# The Healthcare service agent: dicomStores.export writes under one prefix of the output bucket and
# dicomStores.import reads under one prefix of the input bucket; nothing else.
resource "google_storage_bucket_iam_member" "healthcare_import" {
  bucket = google_storage_bucket.data["input"].name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_project_service_identity.agent["healthcare.googleapis.com"].email}"

  condition {
    title       = "healthcare-import-prefix"
    description = "dicomStores.import reads only gs://<input bucket>/${local.healthcare_import_prefix}."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.data["input"].name}/objects/${local.healthcare_import_prefix}\")"
  }
}

# -- the audit trail ----------------------------------------------------------------------------------

# Data Access logs (off by default in Google Cloud) for the three services that hold the key, the
# linkage and the studies: who read or wrote which object, secret version or DICOM store.
resource "google_project_iam_audit_config" "data_access" {
  for_each = toset(local.audited_services)

  project = var.project_id
  service = each.value

  audit_log_config {
    log_type = "ADMIN_READ"
  }
  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}

data "google_logging_project_cmek_settings" "this" {
  project = var.project_id

  depends_on = [google_project_service.enabled]
}

resource "google_kms_crypto_key_iam_member" "logging_agent" {
  crypto_key_id = google_kms_crypto_key.key["logging"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_logging_project_cmek_settings.this.service_account_id}"
}

# A locked log bucket: once locked, neither its entries nor its retention can be cut short.
resource "google_logging_project_bucket_config" "data_access" {
  project        = var.project_id
  location       = var.region
  bucket_id      = "${var.name_prefix}-data-access"
  description    = "Data Access and Admin Activity audit logs of Cloud Storage, Secret Manager and the Healthcare API."
  retention_days = var.audit_log_retention_days
  locked         = var.lock_audit_log_bucket

  cmek_settings {
    kms_key_name = google_kms_crypto_key.key["logging"].id
  }

  depends_on = [google_kms_crypto_key_iam_member.logging_agent]
}

resource "google_logging_project_sink" "data_access" {
  name                   = "${var.name_prefix}-data-access"
  description            = "Audit logs of the services holding the pseudonym key, the linkage and the studies."
  destination            = "logging.googleapis.com/${google_logging_project_bucket_config.data_access.id}"
  filter                 = local.data_access_filter
  unique_writer_identity = true
}

# -- VPC Service Controls (optional) ------------------------------------------------------------------

resource "google_project_service" "access_context_manager" {
  count = var.vpc_sc_access_policy != "" ? 1 : 0

  project            = var.project_id
  service            = "accesscontextmanager.googleapis.com"
  disable_on_destroy = false
}

resource "google_access_context_manager_service_perimeter" "data" {
  count = var.vpc_sc_access_policy != "" ? 1 : 0

  parent         = "accessPolicies/${var.vpc_sc_access_policy}"
  name           = "accessPolicies/${var.vpc_sc_access_policy}/servicePerimeters/${replace(var.name_prefix, "-", "_")}_data"
  title          = "${var.name_prefix} data services"
  perimeter_type = "PERIMETER_TYPE_REGULAR"

  status {
    resources           = ["projects/${local.project_number}"]
    restricted_services = local.perimeter_services
    access_levels       = var.vpc_sc_access_levels
  }

  depends_on = [google_project_service.access_context_manager]
}
