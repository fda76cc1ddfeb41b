#!/usr/bin/env bash
# `make check-image-env`: the worker image's Python environment, built as the Dockerfile builds it,
# in a clean Python 3.11 virtualenv instead of the Beam SDK image (no Docker engine is needed):
#   1. pip install --no-deps --require-hashes -r requirements.lock   (every pin, every hash)
#   2. pip install --no-deps --no-build-isolation --no-index .       (the package, offline)
#   3. pip check                                                     (the lock is consistent)
#   4. import openslide, cv2 and pipeline.main from outside the source tree
# What it cannot show: that the lock also agrees with the packages the Beam SDK base image already
# holds (the Docker build's own `pip check` does that), and the image's Debian libraries.
# Slow (it downloads the whole lock, ~1 GB installed), so it is a make target of its own that
# .ci/run runs, not part of pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON311="${PYTHON311:-python3.11}"
VENV="${IMAGE_ENV_VENV:-.venv-image}"

if ! command -v "$PYTHON311" >/dev/null 2>&1; then
  echo "check-image-env: $PYTHON311 is not installed; the image runs Python 3.11" >&2
  exit 1
fi
version="$("$PYTHON311" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$version" != "3.11" ]]; then
  echo "check-image-env: $PYTHON311 is Python $version, not 3.11" >&2
  exit 1
fi

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
rm -rf "$VENV"
"$PYTHON311" -m venv "$VENV"
VENV="$(cd "$VENV" && pwd)"  # absolute: the import check runs from another directory
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

echo "==> pip install --no-deps --require-hashes -r requirements.lock"
"${pip[@]}" install --quiet --no-deps --require-hashes -r requirements.lock

echo "==> pip install --no-deps --no-build-isolation --no-index . (a copy of the sources, as COPY does)"
cp -r setup.py pyproject.toml deid pipeline transforms "$build/"
"${pip[@]}" install --quiet --no-deps --no-build-isolation --no-index "$build"

echo "==> pip check"
"${pip[@]}" check

echo "==> import openslide, cv2, pipeline.main (outside the source tree)"
(cd / && "$VENV/bin/python" -c "import openslide, cv2, pipeline.main; print('openslide', openslide.__library_version__, 'opencv', cv2.__version__, 'pipeline from', pipeline.main.__file__)")
echo "check-image-env passed"
