# Docker repository for the launcher/worker image. Tags are immutable, so the tag templates/build.sh
# bakes into the image (the workers' --sdk_container_image) always names the same image.
resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = "${var.name_prefix}-images"
  description   = "De-identification pipeline images (Flex Template launcher and Dataflow workers)."
  format        = "DOCKER"
  kms_key_name  = google_kms_crypto_key.key["artifact-registry"].id
  labels        = local.labels

  docker_config {
    immutable_tags = true
  }

  depends_on = [google_kms_crypto_key_iam_member.artifact_registry_agent]
}
