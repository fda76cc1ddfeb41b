# Buckets: input (studies to de-identify), output (de-identified data and the records audit/,
# dead_letter/, runs/), temp (Dataflow staging and temp files, template specs), and access_logs
# (usage logs of the others). The linkage tables have their own bucket under a retention policy
# and the pseudonym key lives in Secret Manager (security.tf). All: uniform bucket-level access,
# public access prevention enforced, CMEK, lifecycle rules; versioning wherever no retention policy
# excludes it; every data bucket logs access into access_logs.

locals {
  buckets = {
    input  = { noncurrent_days = var.noncurrent_retention_days, delete_after_days = 0 }
    output = { noncurrent_days = var.noncurrent_retention_days, delete_after_days = 0 }
    temp   = { noncurrent_days = 1, delete_after_days = var.temp_retention_days }
  }
}

resource "google_storage_bucket" "data" {
  for_each = local.buckets

  name                        = "${local.bucket_prefix}-${each.key}"
  location                    = upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = merge(local.labels, { purpose = each.key })

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.key["storage"].id
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "${each.key}/"
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = each.value.noncurrent_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  # Staging files (OUTPUT/.tmp/<hex>.part) a crashed worker left behind; a live one is minutes old.
  lifecycle_rule {
    condition {
      age            = 2
      matches_suffix = [".part"]
    }
    action {
      type = "Delete"
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.delete_after_days > 0 ? [each.value.delete_after_days] : []
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage_agent]
}

resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:This bucket is the access-log sink itself; logging it into itself would loop.
  name                        = "${local.bucket_prefix}-access-logs"
  location                    = upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = merge(local.labels, { purpose = "access-logs" })

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.key["storage"].id
  }

  lifecycle_rule {
    condition {
      age = var.access_log_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage_agent]
}

# Cloud Storage writes usage logs as this Google group; it needs to create objects in the sink.
resource "google_storage_bucket_iam_member" "access_log_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}
