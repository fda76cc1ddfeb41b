# One image for the Dataflow Flex Template launcher and for the workers (--sdk_container_image).
#
# Build with templates/build.sh (Cloud Build, or a local Docker with BUILDER=docker): it passes
# WORKER_IMAGE, the image's own immutable reference, which the launcher hands to Dataflow so the
# workers run this very image. Versions that must agree, checked by tests/deploy/test_deployment.py:
#   apache/beam_python3.11_sdk:<tag>  ==  BEAM_VERSION in setup.py  ==  apache-beam in requirements.lock
#   python3.11 in the image name      ==  python_requires in setup.py
# After changing setup.py, regenerate the lock (pip-tools, Python 3.11, Linux x86_64 like the image):
#   PIP_CONFIG_FILE=/dev/null pip-compile --generate-hashes --allow-unsafe --strip-extras \
#     --no-emit-index-url --no-emit-find-links --build-deps-for wheel \
#     --index-url https://pypi.org/simple -o requirements.lock setup.py
#
# The image runs as root, as the Beam SDK base image does: Dataflow mounts worker directories under
# /var/opt as root and the template launcher writes /var/log/dataflow, so a USER line breaks both.

# Google's Python 3.11 Flex Template launcher, pinned; only its launcher binary is used.
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:flex_templates_base_image_release_20240628_RC00 AS template_launcher

FROM apache/beam_python3.11_sdk:2.77.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Runtime libraries the wheels do not bundle: GLib for OpenCV, tesseract for --redact_text=ocr.
# OpenSlide itself comes from the openslide-bin wheel pinned in requirements.lock (the library the
# tests use); the import check below proves that it and OpenCV load.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 tesseract-ocr tesseract-ocr-eng \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /template

# Every dependency, pinned with hashes; --no-deps because the lock is complete.
COPY requirements.lock ./
RUN python -m pip install --no-cache-dir --no-deps --require-hashes -r requirements.lock

# The package itself, built offline with the setuptools and wheel pinned in the lock. The sources
# are removed afterwards so the launcher imports the installed package, as the workers do. Then
# `pip check` (the lock against what the Beam image already holds) and an import of the native
# libraries (OpenSlide, OpenCV) and the pipeline fail the build rather than a job.
COPY setup.py pyproject.toml ./
COPY deid ./deid
COPY pipeline ./pipeline
COPY transforms ./transforms
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation --no-index . \
    && rm -rf build ./*.egg-info deid pipeline transforms setup.py pyproject.toml \
    && python -m pip check \
    && python -c "import openslide, cv2, pipeline.main; print('openslide', openslide.__library_version__, 'opencv', cv2.__version__)"

COPY templates/launcher.py ./launcher.py
COPY --from=template_launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

ARG WORKER_IMAGE=""
# No FLEX_TEMPLATE_PYTHON_SETUP_FILE or FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE: nothing is installed
# when the job starts, and PIP_NO_INDEX makes any attempt to fetch a package fail loudly.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/launcher.py \
    DEID_WORKER_IMAGE=${WORKER_IMAGE} \
    PIP_NO_INDEX=1 \
    PYTHONUNBUFFERED=1

# Workers start through Beam's boot; the Flex Template launcher VM runs the launcher binary itself.
ENTRYPOINT ["/opt/apache/beam/boot"]
