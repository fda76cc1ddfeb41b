#!/usr/bin/env bash
# Launch the Flex Template as a Dataflow job.
#
#   templates/run.sh input=gs://BUCKET/studies/ deid_key_secret=projects/P/secrets/S/versions/1 [name=value ...]
#
# Arguments are template parameters (names from templates/metadata.json; unknown names are refused).
# output defaults to gs://<output bucket>/<job name>/.
#
# Settings (environment; unset ones come from `terraform output` in $TF_DIR):
#   PROJECT, REGION, TEMPLATE_PATH, SERVICE_ACCOUNT, KMS_KEY, SUBNETWORK, STAGING_LOCATION,
#   TEMP_LOCATION   as in templates/build.sh
#   OUTPUT_BUCKET   bucket of the default output                  (output output_bucket)
#   JOB_NAME        default deid-<UTC time>
#   MAX_WORKERS     default 10
#   MACHINE_TYPE    default n2-highmem-4
#   UPDATE          1: replace the running streaming job named JOB_NAME in place (gcloud --update;
#                   README "Event-driven mode")
# Workers get private IPs only (--disable-public-ips) on SUBNETWORK, run as SERVICE_ACCOUNT, and
# Dataflow encrypts job state and disks with KMS_KEY.
set -euo pipefail
# shellcheck source=templates/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

setting PROJECT project_id
setting REGION region
setting TEMPLATE_PATH template_spec_path
setting SERVICE_ACCOUNT worker_service_account
setting KMS_KEY dataflow_kms_key
setting SUBNETWORK subnetwork
setting STAGING_LOCATION staging_location
setting TEMP_LOCATION temp_location
JOB_NAME="${JOB_NAME:-deid-$(date -u +%Y%m%d-%H%M%S)}"
MAX_WORKERS="${MAX_WORKERS:-10}"
MACHINE_TYPE="${MACHINE_TYPE:-n2-highmem-4}"

# Parameter names the template declares.
mapfile -t known < <(python3 -c 'import json,sys; [print(p["name"]) for p in json.load(open(sys.argv[1]))["parameters"]]' templates/metadata.json)
params=()
have_output=""
for arg in "$@"; do
  [[ "$arg" == *=* ]] || die "arguments are name=value template parameters, got '$arg'"
  name="${arg%%=*}"
  [[ " ${known[*]} " == *" $name "* ]] || die "'$name' is not a parameter of templates/metadata.json"
  [[ "$arg" != *"~"* ]] || die "parameter values cannot contain '~' (the --parameters delimiter used here)"
  [[ "$name" == output ]] && have_output=1
  params+=("$arg")
done
if [[ -z "$have_output" ]]; then
  setting OUTPUT_BUCKET output_bucket
  params+=("output=gs://$OUTPUT_BUCKET/$JOB_NAME/")
fi
# gcloud's alternate delimiter (^~^) lets values hold commas (keep lists, JSON regions).
joined="$(IFS='~'; echo "${params[*]}")"
update=()
if [[ "${UPDATE:-}" == 1 ]]; then
  update=(--update)
fi

gcloud dataflow flex-template run "$JOB_NAME" \
  --project="$PROJECT" \
  --region="$REGION" \
  --template-file-gcs-location="$TEMPLATE_PATH" \
  --service-account-email="$SERVICE_ACCOUNT" \
  --dataflow-kms-key="$KMS_KEY" \
  --subnetwork="$SUBNETWORK" \
  --disable-public-ips \
  --staging-location="$STAGING_LOCATION" \
  --temp-location="$TEMP_LOCATION" \
  --max-workers="$MAX_WORKERS" \
  --worker-machine-type="$MACHINE_TYPE" \
  --parameters="^~^$joined" \
  "${update[@]}"
