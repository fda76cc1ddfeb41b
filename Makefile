# The README's two commands: `make demo` and `make test`. Both create the venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DATA ?= demo_data
DEMO_OUT ?= demo_out

.PHONY: venv demo demo-healthcare test lint lint-infra typecheck pytest system-deps bench clean check-image-env

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian tools some tests use (dciodvfy, tesseract, Orthanc); tests skip cleanly without them.
system-deps:
	bash scripts/install_system_deps.sh

# The job prints its progress and, when it ends, the summary (pipeline/summary.py; reprint it with
# scripts/summarize_run.py). The demo data and key are the same on every run, so a second
# `make demo` rewrites the same outputs (and adds its own records) instead of adding new ones.
demo: venv
	$(PY) scripts/make_demo_data.py $(DEMO_DATA)
	$(PY) -m pipeline --input $(DEMO_DATA)/input --output $(DEMO_OUT) --deid_key_file $(DEMO_DATA)/demo.key --qa_report

# The same inputs through the Healthcare API branch, against the local stand-in server
# (devtools/fake_healthcare.py, a test double that is not installed with the package).
demo-healthcare: venv
	$(PY) scripts/make_demo_data.py $(DEMO_DATA)
	$(PY) scripts/demo_healthcare.py $(DEMO_DATA) $(DEMO_OUT)_healthcare

lint: venv
	$(VENV)/bin/ruff check .

# hadolint, terraform fmt, checkov (offline, own venv) and shellcheck on the deployment files. A tool
# that cannot be had here (terraform is on neither PyPI nor Debian) is skipped with one line; in CI
# (DEID_CI=1) a skipped step fails.
lint-infra:
	bash scripts/lint_infra.sh

# The worker image's Python environment: requirements.lock with --require-hashes in a clean Python
# 3.11 venv, pip check, import of the pipeline. Slow (downloads the lock): run by .ci/run, not by `make test`.
check-image-env:
	bash scripts/check_image_env.sh

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest

test: lint typecheck lint-infra pytest

bench: venv
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/dicom_throughput.py

clean:
	rm -rf $(DEMO_OUT) $(DEMO_DATA) .pytest_cache .mypy_cache .ruff_cache
