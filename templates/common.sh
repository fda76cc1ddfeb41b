# shellcheck shell=bash
# Shared by templates/build.sh and templates/run.sh (sourced, not run).
#
# Each setting is an environment variable; when it is unset and `terraform` is on PATH, it is read
# from the outputs of the configuration in $TF_DIR (default: terraform/ next to this directory).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TF_DIR="${TF_DIR:-$ROOT/terraform}"

die() {
  echo "error: $*" >&2
  exit 2
}

# tf_out NAME: the Terraform output NAME, or nothing when Terraform or its state is not there.
tf_out() {
  if [[ -n "${NO_TERRAFORM:-}" ]] || ! command -v terraform >/dev/null 2>&1; then
    return 0
  fi
  terraform -chdir="$TF_DIR" output -raw "$1" 2>/dev/null || true
}

# setting VAR OUTPUT: keep $VAR if set, else fill it from the Terraform output OUTPUT; fail if empty.
setting() {
  local var="$1" output="$2"
  if [[ -z "${!var:-}" ]]; then
    printf -v "$var" '%s' "$(tf_out "$output")"
  fi
  [[ -n "${!var}" ]] || die "$var is not set and the Terraform output '$output' is not available"
  export "${var?}"
}
