# Cloud Monitoring: alerts when a de-identification job fails or its quality drops, and a dashboard.
#
# The pipeline's Beam counters (namespace "deid", transforms/common.py METRICS_NAMESPACE) reach Cloud
# Monitoring as Dataflow user counters: metric dataflow.googleapis.com/job/user_counter, a GAUGE of
# the counter's running total per job, labelled metric_name (the counter's name), job_id and
# ptransform, sampled every 60 s. The alerts below read these counters:
#   status_ok, status_dead_letter, status_needs_review   one per audit record, by its status
#   dead_letter_<error kind>, e.g. dead_letter_leak       one per dead letter, by its error kind
#   outputs_quarantined, wsi_outputs_quarantined          outputs moved to quarantine/ (DICOM, slides)
# Each alert sums a counter over a job's transforms (the same counter can be incremented in several)
# and fires when that job's total passes the threshold. Jobs are matched by name prefix.

variable "monitored_job_prefix" {
  description = "Dataflow jobs whose name starts with this are watched (templates/run.sh names jobs deid-<time>)."
  type        = string
  default     = "deid"
}

variable "alert_notification_channels" {
  description = "Existing Cloud Monitoring notification channels (projects/P/notificationChannels/ID) every alert notifies."
  type        = list(string)
  default     = []
}

variable "alert_email" {
  description = "If set, an e-mail notification channel is made for this address and every alert notifies it too."
  type        = string
  default     = ""
}

variable "dead_letter_alert_threshold" {
  description = "Dead-lettered inputs per job above which the dead-letter alert fires (0: any dead letter)."
  type        = number
  default     = 0
}

variable "needs_review_alert_threshold" {
  description = "Inputs held for review per job above which the review alert fires (0: any held input)."
  type        = number
  default     = 0
}

locals {
  job_filter          = "resource.type = \"dataflow_job\" AND resource.label.job_name = starts_with(\"${var.monitored_job_prefix}\")"
  user_counter_filter = "metric.type = \"dataflow.googleapis.com/job/user_counter\" AND ${local.job_filter}"
  notification_channels = concat(
    var.alert_notification_channels,
    [for channel in google_monitoring_notification_channel.email : channel.name],
  )

  # The pipeline's counters that mean "look at this job": name => (counter filter, threshold, what to do).
  counter_alerts = {
    dead_letters = {
      title     = "inputs dead-lettered"
      counters  = "metric.label.metric_name = \"status_dead_letter\""
      threshold = var.dead_letter_alert_threshold
      severity  = "WARNING"
      action    = "Read OUTPUT/dead_letter/dead_letter-<run id>.jsonl: each record names the input's sha256, its error_kind and what to do."
    }
    leaks = {
      title     = "identifying values found in outputs (leaks)"
      counters  = "metric.label.metric_name = \"dead_letter_leak\""
      threshold = 0
      severity  = "CRITICAL"
      action    = "The leak check found an input's identifying value in an output and held it back under OUTPUT/quarantine/<input sha256>/; nothing of it was published. Inspect it before sharing anything of this run."
    }
    quarantined = {
      title     = "outputs quarantined"
      counters  = "metric.label.metric_name = one_of(\"outputs_quarantined\", \"wsi_outputs_quarantined\")"
      threshold = 0
      severity  = "CRITICAL"
      action    = "Outputs were moved to OUTPUT/quarantine/ instead of dicom/ or wsi/; see the leak dead letters of the same run."
    }
    needs_review = {
      title     = "inputs held for review"
      counters  = "metric.label.metric_name = \"status_needs_review\""
      threshold = var.needs_review_alert_threshold
      severity  = "WARNING"
      action    = "Inputs wait in OUTPUT/review/<input sha256>/; decide with python -m pipeline.review."
    }
  }
}

resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email != "" ? 1 : 0

  project      = var.project_id
  display_name = "${var.name_prefix} de-identification alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_alert_policy" "job_failed" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: Dataflow job failed"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "a ${var.monitored_job_prefix}* job is in the failed state"
    condition_threshold {
      filter          = "metric.type = \"dataflow.googleapis.com/job/is_failed\" AND ${local.job_filter}"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["resource.label.job_name"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "604800s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name_prefix}: a de-identification job failed"
    content   = "A Dataflow job named ${var.monitored_job_prefix}* failed. Its records may be missing: open the job's logs in the Dataflow console, fix the cause (a full disk or quota is reported as such) and run it again into the same output prefix, which rewrites the same files."
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_alert_policy" "counter" {
  for_each = local.counter_alerts

  project               = var.project_id
  display_name          = "${var.name_prefix}: ${each.value.title}"
  combiner              = "OR"
  severity              = each.value.severity
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "${each.value.title} above ${each.value.threshold} in a job"
    condition_threshold {
      filter          = "${local.user_counter_filter} AND ${each.value.counters}"
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.threshold
      duration        = "0s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.job_name", "metric.label.job_id"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "604800s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name_prefix}: ${each.value.title}"
    content   = each.value.action
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_dashboard" "deid" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "${var.name_prefix} de-identification"
    mosaicLayout = {
      columns = 12
      tiles = [
        for index, chart in [
          { title = "Jobs failed", filter = "metric.type = \"dataflow.googleapis.com/job/is_failed\" AND ${local.job_filter}", group = "resource.label.job_name" },
          { title = "Inputs by status (audit records)", filter = "${local.user_counter_filter} AND metric.label.metric_name = starts_with(\"status_\")", group = "metric.label.metric_name" },
          { title = "Dead letters by error kind", filter = "${local.user_counter_filter} AND metric.label.metric_name = starts_with(\"dead_letter_\")", group = "metric.label.metric_name" },
          { title = "Outputs quarantined", filter = "${local.user_counter_filter} AND metric.label.metric_name = one_of(\"outputs_quarantined\", \"wsi_outputs_quarantined\")", group = "metric.label.metric_name" },
          { title = "Inputs listed, by kind", filter = "${local.user_counter_filter} AND metric.label.metric_name = starts_with(\"inputs_\")", group = "metric.label.metric_name" },
          { title = "Slide tiles redacted (level 0)", filter = "${local.user_counter_filter} AND metric.label.metric_name = \"wsi_tiles_level0\"", group = "resource.label.job_name" },
          ] : {
          xPos   = (index % 2) * 6
          yPos   = floor(index / 2) * 4
          width  = 6
          height = 4
          widget = {
            title = chart.title
            xyChart = {
              dataSets = [{
                plotType = "LINE"
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = chart.filter
                    aggregation = {
                      alignmentPeriod    = "60s"
                      perSeriesAligner   = "ALIGN_MAX"
                      crossSeriesReducer = "REDUCE_SUM"
                      groupByFields      = [chart.group]
                    }
                  }
                }
              }]
            }
          }
        }
      ]
    }
  })

  depends_on = [google_project_service.enabled]
}
