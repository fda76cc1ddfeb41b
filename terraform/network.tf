# Workers and the launcher VM run with private IPs only: a dedicated subnetwork with Private Google
# Access (to reach Cloud Storage, Artifact Registry and the Healthcare API) and no route to the
# internet. Nothing is downloaded at launch, so none is needed.

resource "google_compute_network" "dataflow" {
  name                    = "${var.name_prefix}-dataflow"
  auto_create_subnetworks = false

  depends_on = [google_project_service.enabled]
}

resource "google_compute_subnetwork" "dataflow" {
  name                     = "${var.name_prefix}-dataflow-${var.region}"
  region                   = var.region
  network                  = google_compute_network.dataflow.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Dataflow workers (network tag "dataflow") exchange shuffle and streaming data on TCP 12345-12346.
resource "google_compute_firewall" "dataflow_internal" {
  name        = "${var.name_prefix}-dataflow-internal"
  network     = google_compute_network.dataflow.id
  direction   = "INGRESS"
  source_tags = ["dataflow"]
  target_tags = ["dataflow"]

  allow {
    protocol = "tcp"
    ports    = ["12345-12346"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
