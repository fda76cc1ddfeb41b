"""terraform/*.tf against the Google providers' own schema (tests/support/tf_schema.py says where it
comes from): every resource and data source type, every argument and block name, at every depth,
and every required argument and block. Whatever .tf files exist when the test runs are checked.

The checker is shown to catch what it must on deliberately broken copies of the real files: a
misspelt argument, a misspelt nested argument, a misspelt block, an unknown resource type and a
required argument left out.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.support.env import REPO_ROOT
from tests.support.tf_schema import check_directory, provider_schema

TF_DIR = REPO_ROOT / "terraform"


def test_every_tf_file_matches_the_provider_schema() -> None:
    result = check_directory(TF_DIR)
    assert result.problems == []
    # Nothing was skipped: every resource, data source and provider block found was checked.
    assert result.checked == result.seen
    assert result.seen["resource"] >= 40 and result.seen["data"] >= 1 and result.seen["provider"] == 2
    assert (TF_DIR / "monitoring.tf").exists()


def test_the_schema_is_the_provider_version_terraform_asks_for() -> None:
    versions = (TF_DIR / "versions.tf").read_text()
    for source in ("hashicorp/google", "hashicorp/google-beta"):
        match = re.search(rf'source\s*=\s*"{source}"\s*\n\s*version\s*=\s*"~> (\d+)\.(\d+)"', versions)
        assert match, f"{source}: no '~> X.Y' constraint in versions.tf"
        schema = provider_schema(source)
        major, minor, _patch = (int(part) for part in schema.provider_version.split("."))
        assert major == int(match.group(1)) and minor >= int(match.group(2)), (source, schema.provider_version)


@pytest.fixture()
def broken_copy(tmp_path: Path) -> Path:
    for name in ("versions.tf", "storage.tf", "monitoring.tf"):
        shutil.copy(TF_DIR / name, tmp_path / name)
    return tmp_path


def _break(directory: Path, file_name: str, old: str, new: str) -> None:
    path = directory / file_name
    text = path.read_text()
    assert old in text, f"{old!r} is not in {file_name} any more: update this test"
    path.write_text(text.replace(old, new, 1))


def test_the_copy_is_clean_before_it_is_broken(broken_copy: Path) -> None:
    result = check_directory(broken_copy)
    assert result.problems == [] and result.checked["resource"] >= 5


@pytest.mark.parametrize(
    ("file_name", "old", "new", "expected"),
    [
        (
            "storage.tf",
            "uniform_bucket_level_access = true",
            "uniform_bucket_level_acess = true",
            "storage.tf: google_storage_bucket.data: unknown argument or block 'uniform_bucket_level_acess' "
            "(did you mean 'uniform_bucket_level_access'?)",
        ),
        (
            "monitoring.tf",
            'per_series_aligner   = "ALIGN_MAX"\n        cross_series_reducer = "REDUCE_MAX"',
            'per_series_aligne    = "ALIGN_MAX"\n        cross_series_reducer = "REDUCE_MAX"',
            "monitoring.tf: google_monitoring_alert_policy.job_failed.conditions.condition_threshold.aggregations: "
            "unknown argument or block 'per_series_aligne' (did you mean 'per_series_aligner'?)",
        ),
        (
            "storage.tf",
            "  versioning {",
            "  versionning {",
            "storage.tf: google_storage_bucket.data: unknown argument or block 'versionning' "
            "(did you mean 'versioning'?)",
        ),
        (
            "monitoring.tf",
            'resource "google_monitoring_dashboard" "deid"',
            'resource "google_monitoring_dashbord" "deid"',
            "monitoring.tf: google_monitoring_dashbord.deid: unknown resource type google_monitoring_dashbord in "
            "cdktf-cdktf-provider-google 16.12.1",
        ),
        (
            "monitoring.tf",
            '  combiner              = "OR"\n  severity              = "ERROR"',
            '  severity              = "ERROR"',
            "monitoring.tf: google_monitoring_alert_policy.job_failed: required argument 'combiner' is not set",
        ),
    ],
    ids=["argument", "nested-argument", "block", "resource-type", "required-argument"],
)
def test_a_broken_copy_fails(broken_copy: Path, file_name: str, old: str, new: str, expected: str) -> None:
    _break(broken_copy, file_name, old, new)
    assert check_directory(broken_copy).problems == [expected]
