variable "project_id" {
  description = "Google Cloud project that holds everything below."
  type        = string
}

variable "region" {
  description = "Region of the buckets, keys, image repository, network and Dataflow jobs (one region keeps CMEK simple)."
  type        = string
  default     = "us-central1"
}

variable "healthcare_location" {
  description = "Location of the Healthcare dataset; empty means var.region."
  type        = string
  default     = ""
}

variable "name_prefix" {
  description = "Prefix of every resource name (lower case letters, digits, dashes)."
  type        = string
  default     = "deid"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix: 3-20 characters, lower case letters, digits and dashes, starting with a letter."
  }
}

variable "bucket_prefix" {
  description = "Prefix of the bucket names, which are global; empty means \"<project_id>-<name_prefix>\"."
  type        = string
  default     = ""
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "kms_rotation_period" {
  description = "Rotation period of every KMS key, in seconds with an 's' suffix; at most 90 days (7776000s)."
  type        = string
  default     = "7776000s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.kms_rotation_period)) && tonumber(trimsuffix(var.kms_rotation_period, "s")) <= 7776000 && tonumber(trimsuffix(var.kms_rotation_period, "s")) >= 86400
    error_message = "kms_rotation_period must be between 86400s (1 day) and 7776000s (90 days)."
  }
}

variable "temp_retention_days" {
  description = "Days before objects in the temp/staging bucket are deleted."
  type        = number
  default     = 7
}

variable "noncurrent_retention_days" {
  description = "Days a replaced or deleted object version is kept in the input, output and audit buckets."
  type        = number
  default     = 30
}

variable "access_log_retention_days" {
  description = "Days access logs are kept."
  type        = number
  default     = 365
}

variable "subnet_cidr" {
  description = "Range of the workers' subnetwork (private IPs only, Private Google Access on)."
  type        = string
  default     = "10.64.0.0/20"
}

variable "run_flex_template_job" {
  description = "Create google_dataflow_flex_template_job. Off by default: a finished batch job is recreated on every apply (see the README)."
  type        = bool
  default     = false
}

variable "template_spec_path" {
  description = "gs:// path of the Flex Template spec templates/build.sh wrote; empty means the default path in the temp bucket."
  type        = string
  default     = ""
}

variable "job_name" {
  description = "Name of the Dataflow job that run_flex_template_job creates."
  type        = string
  default     = "deid-pipeline"
}

variable "job_parameters" {
  description = "Template parameters of that job (names from templates/metadata.json); output defaults to the output bucket."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for name in keys(var.job_parameters) :
      contains([for p in jsondecode(file("${path.module}/../templates/metadata.json")).parameters : p.name], name)
    ])
    error_message = "job_parameters: every key must be a parameter of templates/metadata.json."
  }
}

variable "max_workers" {
  description = "Upper bound of the job's autoscaling."
  type        = number
  default     = 10
}

variable "worker_machine_type" {
  description = "Machine type of the workers (slides need memory: n2-highmem-4 or larger)."
  type        = string
  default     = "n2-highmem-4"
}
