# The event mode (README "Event-driven mode"): new objects in the input bucket and new instances in
# the source DICOM store reach the streaming job through Pub/Sub.
#
#   input bucket --OBJECT_FINALIZE--> uploads topic (CMEK) --> uploads subscription --+
#   DICOM stores ------------------> dicom_notifications (healthcare.tf) --> dicom subscription --+--> streaming job
#   either subscription, after max_delivery_attempts --> dead-letter topic (CMEK) --> dead-letter subscription
#
# The job acknowledges a message once it holds it (Dataflow) or once its round is recorded (a local
# run); a message that keeps coming back undelivered ends in the dead-letter subscription for
# inspection. Inputs the job takes but cannot de-identify are the job's own dead letters
# (OUTPUT/dead_letter/), not Pub/Sub's. Both DICOM stores notify one topic: the job takes only the
# source store's instances and ignores the rest.

locals {
  # Parameters the streaming job passes itself; var.streaming_parameters adds to or overrides them.
  streaming_default_parameters = {
    input_subscription           = "${google_pubsub_subscription.uploads.id},${google_pubsub_subscription.dicom.id}"
    input                        = "gs://${google_storage_bucket.data["input"].name}/"
    output                       = "gs://${google_storage_bucket.data["output"].name}/${var.streaming_job_name}/"
    healthcare_source_store      = google_healthcare_dicom_store.store["source"].id
    healthcare_destination_store = google_healthcare_dicom_store.store["destination"].id
  }
  streaming_parameters = merge(local.streaming_default_parameters, var.streaming_parameters)
  # Pub/Sub's own service agent moves undeliverable messages to the dead-letter topic.
  pubsub_agent = "serviceAccount:${google_project_service_identity.agent["pubsub.googleapis.com"].email}"
  event_subscriptions = {
    uploads = google_pubsub_subscription.uploads.id
    dicom   = google_pubsub_subscription.dicom.id
  }
}

# -- topics -----------------------------------------------------------------------------------------

resource "google_pubsub_topic" "uploads" {
  name         = "${var.name_prefix}-uploads"
  kms_key_name = google_kms_crypto_key.key["pubsub"].id
  labels       = local.labels

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

resource "google_pubsub_topic" "dead_letter" {
  name         = "${var.name_prefix}-events-dead-letter"
  kms_key_name = google_kms_crypto_key.key["pubsub"].id
  labels       = local.labels

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

# Cloud Storage's service agent publishes the input bucket's notifications.
resource "google_pubsub_topic_iam_member" "storage_publisher" {
  topic  = google_pubsub_topic.uploads.id
  role   = "roles/pubsub.publisher"
  member = local.storage_agent
}

resource "google_storage_notification" "uploads" {
  bucket         = google_storage_bucket.data["input"].name
  payload_format = "JSON_API_V1"
  topic          = google_pubsub_topic.uploads.id
  event_types    = ["OBJECT_FINALIZE"]

  depends_on = [google_pubsub_topic_iam_member.storage_publisher]
}

# -- subscriptions ----------------------------------------------------------------------------------

resource "google_pubsub_subscription" "uploads" {
  name  = "${var.name_prefix}-uploads"
  topic = google_pubsub_topic.uploads.id
  # A local run's round holds its messages until its records are written (at most 600 s).
  ack_deadline_seconds       = 600
  message_retention_duration = "604800s"
  labels                     = local.labels

  expiration_policy {
    ttl = "" # never expires, even while no job reads it
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.event_max_delivery_attempts
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

resource "google_pubsub_subscription" "dicom" {
  name                       = "${var.name_prefix}-dicom-instances"
  topic                      = google_pubsub_topic.dicom_notifications.id
  ack_deadline_seconds       = 600
  message_retention_duration = "604800s"
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.event_max_delivery_attempts
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

# Messages sent to the dead-letter topic wait here to be inspected (a topic alone keeps nothing).
resource "google_pubsub_subscription" "dead_letter" {
  name                       = "${var.name_prefix}-events-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }
}

# Dead lettering: the Pub/Sub service agent publishes to the dead-letter topic and acknowledges the
# message on the subscription it came from.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_forwarder" {
  for_each = local.event_subscriptions

  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# -- the worker -------------------------------------------------------------------------------------

# The worker pulls and acknowledges (subscriber) and reads the subscription's settings (viewer), on
# these two subscriptions only; it cannot publish, nor read the dead-letter subscription.
resource "google_pubsub_subscription_iam_member" "worker_subscriber" {
  for_each = local.event_subscriptions

  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.worker.member
}

resource "google_pubsub_subscription_iam_member" "worker_viewer" {
  for_each = local.event_subscriptions

  subscription = each.value
  role         = "roles/pubsub.viewer"
  member       = google_service_account.worker.member
}

# -- the streaming job (var.streaming, default false) -----------------------------------------------

# The same Flex Template as the batch job: the input_subscription parameter makes it a streaming
# job. Unlike a batch job it keeps running, so Terraform does not launch it again on every apply;
# changed parameters update it in place, and destroying it drains it (nothing in flight is lost).
resource "google_dataflow_flex_template_job" "streaming" {
  provider = google-beta
  count    = var.streaming ? 1 : 0

  name                    = var.streaming_job_name
  region                  = var.region
  container_spec_gcs_path = local.template_spec_path
  parameters              = local.streaming_parameters
  service_account_email   = google_service_account.worker.email
  kms_key_name            = google_kms_crypto_key.key["dataflow"].id
  ip_configuration        = "WORKER_IP_PRIVATE"
  subnetwork              = google_compute_subnetwork.dataflow.self_link
  staging_location        = "gs://${google_storage_bucket.data["temp"].name}/staging"
  temp_location           = "gs://${google_storage_bucket.data["temp"].name}/tmp"
  max_workers             = var.max_workers
  machine_type            = var.worker_machine_type
  enable_streaming_engine = true
  on_delete               = "drain"
  labels                  = local.labels

  lifecycle {
    precondition {
      condition     = alltrue([for name in keys(local.streaming_parameters) : contains(local.template_parameter_names, name)])
      error_message = "Every streaming job parameter must be a parameter of templates/metadata.json."
    }
  }

  depends_on = [
    google_kms_crypto_key_iam_member.dataflow_agents,
    google_project_iam_member.worker_dataflow,
    google_storage_bucket_iam_member.worker,
    google_storage_bucket_iam_member.worker_staging,
    google_secret_manager_secret_iam_member.worker_key_reader,
    google_artifact_registry_repository_iam_member.worker_reader,
    google_pubsub_subscription_iam_member.worker_subscriber,
    google_pubsub_subscription_iam_member.worker_viewer,
    google_healthcare_dataset_iam_member.worker,
  ]
}

# -- variables and outputs --------------------------------------------------------------------------

variable "streaming" {
  description = "Launch the streaming (event-driven) job from the Flex Template; it runs until drained (see the README)."
  type        = bool
  default     = false
}

variable "streaming_job_name" {
  description = "Name of the streaming job var.streaming creates; its records go to gs://<output bucket>/<name>/."
  type        = string
  default     = "deid-events"
}

variable "streaming_parameters" {
  description = "Template parameters of the streaming job (names from templates/metadata.json), e.g. settle_seconds, window_seconds, deid_key_secret."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for name in keys(var.streaming_parameters) :
      contains([for p in jsondecode(file("${path.module}/../templates/metadata.json")).parameters : p.name], name)
    ])
    error_message = "streaming_parameters: every key must be a parameter of templates/metadata.json."
  }
}

variable "event_max_delivery_attempts" {
  description = "Deliveries of one message before Pub/Sub moves it to the dead-letter topic (5-100)."
  type        = number
  default     = 10

  validation {
    condition     = var.event_max_delivery_attempts >= 5 && var.event_max_delivery_attempts <= 100
    error_message = "event_max_delivery_attempts must be between 5 and 100 (Pub/Sub's limits)."
  }
}

output "uploads_topic" {
  description = "Topic the input bucket notifies (OBJECT_FINALIZE)."
  value       = google_pubsub_topic.uploads.id
}

output "input_subscriptions" {
  description = "input_subscription parameter of the streaming job: the uploads and DICOM store subscriptions."
  value       = local.streaming_default_parameters.input_subscription
}

output "events_dead_letter_subscription" {
  description = "Where messages that could not be delivered wait for inspection."
  value       = google_pubsub_subscription.dead_letter.id
}

output "streaming_job_id" {
  description = "Id of the streaming job, when var.streaming is true."
  value       = one(google_dataflow_flex_template_job.streaming[*].job_id)
}
