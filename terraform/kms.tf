# One key ring, one key per use, all in var.region (CMEK keys must share the resource's location).
# Keys rotate at most every 90 days and cannot be destroyed by Terraform: losing one loses the data.

resource "google_kms_key_ring" "deid" {
  name     = "${var.name_prefix}-keyring"
  location = var.region

  depends_on = [google_project_service.enabled]
}

resource "google_kms_crypto_key" "key" {
  for_each = toset(["storage", "artifact-registry", "dataflow", "pubsub", "secret-manager", "logging"])

  name            = "${var.name_prefix}-${each.key}"
  key_ring        = google_kms_key_ring.deid.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kms_rotation_period
  labels          = local.labels

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = "SOFTWARE"
  }

  lifecycle {
    prevent_destroy = true
  }
}

# Each key is usable only by the service agents that encrypt with it.
resource "google_kms_crypto_key_iam_member" "storage_agent" {
  crypto_key_id = google_kms_crypto_key.key["storage"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.storage_agent
}

resource "google_kms_crypto_key_iam_member" "artifact_registry_agent" {
  crypto_key_id = google_kms_crypto_key.key["artifact-registry"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_project_service_identity.agent["artifactregistry.googleapis.com"].email}"
}

resource "google_kms_crypto_key_iam_member" "pubsub_agent" {
  crypto_key_id = google_kms_crypto_key.key["pubsub"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_project_service_identity.agent["pubsub.googleapis.com"].email}"
}

# Dataflow's --dataflow_kms_key: the Dataflow service agent encrypts job state, the Compute Engine
# service agent the workers' persistent disks.
resource "google_kms_crypto_key_iam_member" "dataflow_agents" {
  for_each = {
    dataflow = local.dataflow_agent
    compute  = local.compute_agent
  }

  crypto_key_id = google_kms_crypto_key.key["dataflow"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value

  depends_on = [google_project_service.enabled]
}
