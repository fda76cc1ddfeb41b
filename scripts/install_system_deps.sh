#!/usr/bin/env bash
# Installs the Debian packages tests use when they are missing: dicom3tools (dciodvfy),
# tesseract-ocr, orthanc + orthanc-dicomweb, chromium, and the Pub/Sub emulator
# (google-cloud-cli-pubsub-emulator, from Google's Cloud SDK apt repository, which is added when no
# configured source has the package). Needs root; does nothing when all are present.
set -euo pipefail
need=()
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr)
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
PUBSUB_EMULATOR=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator
[ -x "$PUBSUB_EMULATOR" ] || need+=(google-cloud-cli-pubsub-emulator)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing ${need[*]}; run as root to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
has_candidate() {
  apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'
}
if [[ " ${need[*]} " == *" google-cloud-cli-pubsub-emulator "* ]] && ! has_candidate google-cloud-cli-pubsub-emulator; then
  # The emulator is not in Debian: add Google's Cloud SDK repository (signed by its published key).
  apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg >/dev/null
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | gpg --dearmor --yes -o /usr/share/keyrings/cloud.google.gpg
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" \
    >/etc/apt/sources.list.d/google-cloud-sdk.list
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
