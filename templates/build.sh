#!/usr/bin/env bash
# Build the launcher/worker image and the Flex Template spec.
#
#   templates/build.sh
#
# Settings (environment; unset ones come from `terraform output` in $TF_DIR):
#   PROJECT           Google Cloud project                         (output project_id)
#   REGION            region of the build, the image and the jobs  (output region)
#   REPOSITORY        Artifact Registry Docker repository path     (output image_repository)
#   TEMPLATE_PATH     gs:// path of the template spec to write     (output template_spec_path)
#   SERVICE_ACCOUNT   worker/launcher service account              (output worker_service_account)
#   KMS_KEY           Dataflow CMEK key                            (output dataflow_kms_key)
#   SUBNETWORK        private-IP subnetwork                        (output subnetwork)
#   STAGING_LOCATION  Dataflow staging location                    (output staging_location)
#   TEMP_LOCATION     Dataflow temp location                       (output temp_location)
#   IMAGE_NAME        image name in the repository (default deid-pipeline)
#   TAG               image tag (default: commit and UTC time; tags are immutable in the repository)
#   BUILDER           cloudbuild (default) or docker (a local Docker engine that can push)
#
# The service account, key, subnetwork, private IPs and locations become the template's default
# environment; templates/run.sh passes them again, so either alone is enough.
set -euo pipefail
# shellcheck source=templates/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

setting PROJECT project_id
setting REGION region
setting REPOSITORY image_repository
setting TEMPLATE_PATH template_spec_path
setting SERVICE_ACCOUNT worker_service_account
setting KMS_KEY dataflow_kms_key
setting SUBNETWORK subnetwork
setting STAGING_LOCATION staging_location
setting TEMP_LOCATION temp_location
IMAGE_NAME="${IMAGE_NAME:-deid-pipeline}"
BUILDER="${BUILDER:-cloudbuild}"
if [[ -z "${TAG:-}" ]]; then
  TAG="$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)-$(date -u +%Y%m%d%H%M%S)"
fi
IMAGE="$REPOSITORY/$IMAGE_NAME:$TAG"

# The template's parameters must be those of the code going into the image.
PYTHON="${PYTHON:-python3}"
if "$PYTHON" -c "import apache_beam" >/dev/null 2>&1; then
  "$PYTHON" scripts/gen_template_metadata.py --check \
    || die "templates/metadata.json does not match pipeline/options.py: run scripts/gen_template_metadata.py"
else
  echo "warning: $PYTHON cannot import apache_beam; templates/metadata.json not checked against the options" >&2
fi
if [[ -n "$(git status --porcelain -- Dockerfile requirements.lock setup.py deid pipeline transforms templates 2>/dev/null)" ]]; then
  echo "warning: uncommitted changes go into $IMAGE" >&2
fi

echo "building $IMAGE with $BUILDER"
case "$BUILDER" in
  cloudbuild)
    gcloud builds submit . \
      --project="$PROJECT" \
      --region="$REGION" \
      --config=templates/cloudbuild.yaml \
      --substitutions="_IMAGE=$IMAGE"
    ;;
  docker)
    docker build --build-arg "WORKER_IMAGE=$IMAGE" --tag "$IMAGE" .
    docker push "$IMAGE"
    ;;
  *)
    die "BUILDER must be cloudbuild or docker, not '$BUILDER'"
    ;;
esac

echo "writing the template spec $TEMPLATE_PATH"
gcloud dataflow flex-template build "$TEMPLATE_PATH" \
  --project="$PROJECT" \
  --image="$IMAGE" \
  --sdk-language=PYTHON \
  --metadata-file=templates/metadata.json \
  --service-account-email="$SERVICE_ACCOUNT" \
  --dataflow-kms-key="$KMS_KEY" \
  --subnetwork="$SUBNETWORK" \
  --disable-public-ips \
  --staging-location="$STAGING_LOCATION" \
  --temp-location="$TEMP_LOCATION" \
  --worker-region="$REGION"

echo "image:    $IMAGE"
echo "template: $TEMPLATE_PATH"
