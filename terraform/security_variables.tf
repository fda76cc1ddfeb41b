# Variables of security.tf (README "Security model").

variable "reidentification_readers" {
  description = "IAM members allowed to read the linkage tables, i.e. to re-identify (e.g. \"group:reid-approvers@example.org\"). Empty: nobody but project administrators."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.reidentification_readers : can(regex("^(group|user|serviceAccount):[^@\\s]+@[^@\\s]+$", m))])
    error_message = "reidentification_readers: IAM members such as group:NAME@DOMAIN, user:... or serviceAccount:...; never allUsers."
  }
}

variable "linkage_retention_days" {
  description = "Days every linkage table is kept before anyone can delete or replace it (the bucket's retention policy)."
  type        = number
  default     = 365

  validation {
    condition     = var.linkage_retention_days >= 1 && var.linkage_retention_days <= 36500
    error_message = "linkage_retention_days must be between 1 and 36500."
  }
}

variable "lock_linkage_retention" {
  description = "Lock the linkage bucket's retention policy (Bucket Lock). Irreversible: the period can then only grow, and the bucket cannot be deleted before its objects age out."
  type        = bool
  default     = false
}

variable "audit_log_retention_days" {
  description = "Days the Data Access audit logs are kept in their log bucket."
  type        = number
  default     = 400

  validation {
    condition     = var.audit_log_retention_days >= 1 && var.audit_log_retention_days <= 3650
    error_message = "audit_log_retention_days must be between 1 and 3650."
  }
}

variable "lock_audit_log_bucket" {
  description = "Lock the audit log bucket: its entries cannot be deleted before audit_log_retention_days and the retention cannot be reduced. Irreversible."
  type        = bool
  default     = true
}

variable "vpc_sc_access_policy" {
  description = "Number of the organization's Access Context Manager policy; set it to put the project's data services in a VPC Service Controls perimeter. Empty (default): no perimeter."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[0-9]*$", var.vpc_sc_access_policy))
    error_message = "vpc_sc_access_policy: the policy number (digits only), or empty."
  }
}

variable "vpc_sc_access_levels" {
  description = "Access levels (accessPolicies/N/accessLevels/NAME) whose callers may reach the perimeter's services from outside it: operators running build.sh/run.sh, Cloud Build."
  type        = list(string)
  default     = []
}
