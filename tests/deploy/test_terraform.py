"""terraform/ read with python-hcl2: cross-file consistency and the security properties it promises.

`terraform validate` needs the Google providers, which cannot be downloaded here; checkov and
`terraform fmt` run in scripts/lint_infra.sh. These tests cover what neither checks: that every
parameter the Dataflow job passes exists in templates/metadata.json, that every bucket is CMEK and
private, that the scripts read only outputs that exist, and that the worker's rights are the ones
the pipeline needs.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.support.env import REPO_ROOT

ROOT = REPO_ROOT
TF_DIR = ROOT / "terraform"
METADATA = ROOT / "templates" / "metadata.json"
NINETY_DAYS_S = 90 * 24 * 3600

EXPECTED_HEALTHCARE_PERMISSIONS = {
    "healthcare.dicomStores.deidentify",
    "healthcare.dicomStores.dicomWebRead",
    "healthcare.dicomStores.dicomWebWrite",
    "healthcare.dicomStores.export",
    "healthcare.dicomStores.get",
    "healthcare.operations.get",
}


def _clean(value: Any) -> Any:
    """python-hcl2 keeps HCL's quotes around literal strings and block labels; drop them."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


class Config:
    def __init__(self, directory: Path) -> None:
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.text = ""
        for path in sorted(directory.glob("*.tf")):
            text = path.read_text(encoding="utf-8")
            self.text += text
            with path.open(encoding="utf-8") as handle:
                parsed = _clean(hcl2.load(handle))
            for block in parsed.get("resource", []):
                for kind, named in block.items():
                    for name, body in named.items():
                        self.resources[(kind, name)] = body
            for block in parsed.get("variable", []):
                self.variables.update(block)
            for block in parsed.get("output", []):
                self.outputs.update(block)
            for block in parsed.get("locals", []):
                self.locals.update(block)

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}

    def raw_block(self, kind: str, name: str) -> str:
        match = re.search(rf'resource "{kind}" "{name}" \{{\n(.*?)\n\}}\n', self.text, re.S)
        assert match, f"{kind}.{name} not found in the .tf text"
        return match.group(1)


@pytest.fixture(scope="module")
def tf() -> Config:
    return Config(TF_DIR)


def metadata_names() -> set[str]:
    return {p["name"] for p in json.loads(METADATA.read_text())["parameters"]}


# -- buckets ------------------------------------------------------------------------------------


def bucket_problems(name: str, body: dict[str, Any], raw: str) -> list[str]:
    problems = []
    if body.get("uniform_bucket_level_access") is not True:
        problems.append(f"{name}: uniform bucket-level access off")
    if body.get("public_access_prevention") != "enforced":
        problems.append(f"{name}: public access prevention not enforced")
    key = (body.get("encryption") or [{}])[0].get("default_kms_key_name", "")
    if not key.startswith("${google_kms_crypto_key."):
        problems.append(f"{name}: not encrypted with a Terraform-managed KMS key (CMEK)")
    # Object Versioning and a retention policy exclude each other; one of them must protect the objects.
    if (body.get("versioning") or [{}])[0].get("enabled") is not True and not body.get("retention_policy"):
        problems.append(f"{name}: versioning off and no retention policy")
    if not body.get("lifecycle_rule"):
        problems.append(f"{name}: no lifecycle rule")
    if body.get("force_destroy") is True:
        problems.append(f"{name}: force_destroy would delete data with the bucket")
    log_bucket = (body.get("logging") or [{}])[0].get("log_bucket", "")
    skipped = re.search(r"#checkov:skip=CKV_GCP_62:\S.{10,}", raw)
    if not log_bucket.startswith("${google_storage_bucket.") and not skipped:
        problems.append(f"{name}: no access logging")
    return problems


def test_every_bucket_is_cmek_private_versioned_logged(tf):
    buckets = tf.of_type("google_storage_bucket")
    assert set(tf.locals["buckets"]) == {"input", "output", "temp"}
    assert set(buckets) == {"data", "access_logs", "linkage"}
    problems = [
        p
        for name, body in buckets.items()
        for p in bucket_problems(name, body, tf.raw_block("google_storage_bucket", name))
    ]
    assert problems == []
    # Exactly one bucket is exempt from logging: the sink the others log into.
    assert buckets["data"]["logging"][0]["log_bucket"] == "${google_storage_bucket.access_logs.name}"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda b: b.pop("encryption"), "CMEK"),
        (lambda b: b.update(public_access_prevention="inherited"), "public access prevention"),
        (lambda b: b.update(uniform_bucket_level_access=False), "uniform"),
        (lambda b: b["versioning"][0].update(enabled=False), "versioning"),
        (lambda b: b.pop("logging"), "access logging"),
        (lambda b: b.pop("lifecycle_rule"), "lifecycle"),
        (lambda b: b.update(force_destroy=True), "force_destroy"),
    ],
)
def test_bucket_check_catches_drift(tf, mutate, expected):
    body = copy.deepcopy(tf.of_type("google_storage_bucket")["data"])
    mutate(body)
    assert any(expected in p for p in bucket_problems("data", body, "")), expected


def test_storage_key_is_usable_by_the_storage_agent(tf):
    grant = tf.of_type("google_kms_crypto_key_iam_member")["storage_agent"]
    assert grant["crypto_key_id"] == '${google_kms_crypto_key.key["storage"].id}'
    assert grant["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    for body in tf.of_type("google_storage_bucket").values():
        assert body["encryption"][0]["default_kms_key_name"] == '${google_kms_crypto_key.key["storage"].id}'


def test_nothing_is_granted_to_the_public(tf):
    for (kind, name), body in tf.resources.items():
        if "_iam_" in kind:
            members = [body.get("member", "")] + list(body.get("members", []))
            assert not any(m in {"allUsers", "allAuthenticatedUsers"} for m in members), f"{kind}.{name}"


# -- keys ---------------------------------------------------------------------------------------


def test_keys_rotate_within_90_days_and_cannot_be_destroyed(tf):
    keys = tf.of_type("google_kms_crypto_key")
    assert keys
    variable = tf.variables["kms_rotation_period"]
    assert int(variable["default"].rstrip("s")) <= NINETY_DAYS_S
    assert "7776000" in json.dumps(variable["validation"])
    for name, key in keys.items():
        period = key["rotation_period"]
        if period != "${var.kms_rotation_period}":
            assert int(period.rstrip("s")) <= NINETY_DAYS_S, name
        assert key["lifecycle"][0]["prevent_destroy"] is True, name


def test_dataflow_and_compute_agents_can_use_the_dataflow_key(tf):
    grants = tf.of_type("google_kms_crypto_key_iam_member")["dataflow_agents"]
    assert grants["crypto_key_id"] == '${google_kms_crypto_key.key["dataflow"].id}'
    assert grants["for_each"] == {"dataflow": "${local.dataflow_agent}", "compute": "${local.compute_agent}"}
    assert "@dataflow-service-producer-prod.iam.gserviceaccount.com" in tf.locals["dataflow_agent"]
    assert "@compute-system.iam.gserviceaccount.com" in tf.locals["compute_agent"]


def test_registry_and_topic_are_cmek(tf):
    registry = tf.of_type("google_artifact_registry_repository")["images"]
    assert registry["format"] == "DOCKER"
    assert registry["kms_key_name"].startswith("${google_kms_crypto_key.")
    assert registry["docker_config"][0]["immutable_tags"] is True
    topic = tf.of_type("google_pubsub_topic")["dicom_notifications"]
    assert topic["kms_key_name"].startswith("${google_kms_crypto_key.")


# -- identities -----------------------------------------------------------------------------------


def test_custom_role_holds_exactly_the_healthcare_permissions(tf):
    role = tf.of_type("google_project_iam_custom_role")["healthcare_deid"]
    assert set(role["permissions"]) == EXPECTED_HEALTHCARE_PERMISSIONS
    binding = tf.of_type("google_healthcare_dataset_iam_member")["worker"]
    assert binding["role"] == "${google_project_iam_custom_role.healthcare_deid.id}"
    assert binding["member"] == "${google_service_account.worker.member}"


def test_worker_has_least_privilege(tf):
    project_roles = {body["role"] for body in tf.of_type("google_project_iam_member").values()}
    assert project_roles == {"roles/dataflow.worker"}
    roles = {body.get("role") for (kind, _), body in tf.resources.items() if "_iam_" in kind}
    broad = {"roles/owner", "roles/editor", "roles/viewer", "roles/storage.admin", "roles/healthcare.datasetAdmin"}
    assert not roles & broad
    bucket_roles = tf.locals["worker_bucket_roles"]
    assert {r["role"] for r in bucket_roles.values()} <= {
        "roles/storage.objectViewer",
        "roles/storage.objectCreator",
        "roles/storage.objectUser",
        "roles/storage.legacyBucketReader",
    }
    # The input bucket is read-only for the workers.
    assert {r["role"] for r in bucket_roles.values() if r["bucket"] == "input"} == {"roles/storage.objectViewer"}


# -- Healthcare ---------------------------------------------------------------------------------


def test_healthcare_dataset_uses_google_managed_keys_and_says_why(tf):
    dataset = tf.of_type("google_healthcare_dataset")["deid"]
    assert "encryption_spec" not in dataset
    healthcare_tf = (TF_DIR / "healthcare.tf").read_text()
    assert "cannot de-identify" in healthcare_tf and "Google-managed" in healthcare_tf
    stores = tf.of_type("google_healthcare_dicom_store")["store"]
    assert stores["for_each"] == '${toset(["source", "destination"])}'
    assert stores["notification_config"][0]["pubsub_topic"] == "${google_pubsub_topic.dicom_notifications.id}"


# -- the Dataflow job -----------------------------------------------------------------------------


def job_parameter_problems(job: dict[str, Any], locals_: dict[str, Any], names: set[str]) -> list[str]:
    """Every parameter key the job can pass that templates/metadata.json does not declare."""
    problems: list[str] = []

    def keys_of(expression: Any, where: str) -> None:
        if isinstance(expression, dict):
            problems.extend(f"{where}: {key!r} not in metadata.json" for key in expression if key not in names)
            return
        refs = re.findall(r"local\.([A-Za-z0-9_]+)", str(expression))
        for ref in refs:
            keys_of(locals_[ref], f"local.{ref}")
        if not refs and "var.job_parameters" not in str(expression):
            problems.append(f"{where}: cannot tell the keys of {expression!r}")

    keys_of(job["parameters"], "parameters")
    return problems


def test_every_job_parameter_exists_in_metadata(tf):
    job = tf.of_type("google_dataflow_flex_template_job")["deid"]
    assert job_parameter_problems(job, tf.locals, metadata_names()) == []
    assert set(tf.locals["job_default_parameters"]) == {"output"}
    # var.job_parameters can only hold metadata names (validation) and the job checks the merge.
    assert "templates/metadata.json" in json.dumps(tf.variables["job_parameters"]["validation"])
    assert "templates/metadata.json" in tf.locals["template_parameter_names"]
    precondition = job["lifecycle"][0]["precondition"][0]["condition"]
    assert "local.template_parameter_names" in precondition and "local.job_parameters" in precondition


def test_job_parameter_check_catches_an_unknown_name(tf):
    job = tf.of_type("google_dataflow_flex_template_job")["deid"]
    locals_ = copy.deepcopy(tf.locals)
    locals_["job_default_parameters"]["inputt"] = "gs://x/"
    assert job_parameter_problems(job, locals_, metadata_names()) == [
        "local.job_default_parameters: 'inputt' not in metadata.json"
    ]
    inline = {**job, "parameters": {"output": "gs://o/", "label": "drop"}}
    assert job_parameter_problems(inline, locals_, metadata_names()) == ["parameters: 'label' not in metadata.json"]


def test_job_is_off_by_default_private_and_cmek(tf):
    assert tf.variables["run_flex_template_job"]["default"] is False
    job = tf.of_type("google_dataflow_flex_template_job")["deid"]
    assert job["count"] == "${var.run_flex_template_job ? 1 : 0}"
    assert job["provider"] == "google-beta"
    assert job["ip_configuration"] == "WORKER_IP_PRIVATE"
    assert job["kms_key_name"] == '${google_kms_crypto_key.key["dataflow"].id}'
    assert job["service_account_email"] == "${google_service_account.worker.email}"
    assert job["subnetwork"] == "${google_compute_subnetwork.dataflow.self_link}"
    subnet = tf.of_type("google_compute_subnetwork")["dataflow"]
    assert subnet["private_ip_google_access"] is True


# -- scripts and lint skips -----------------------------------------------------------------------


def test_scripts_read_only_outputs_that_exist(tf):
    used: set[str] = set()
    for script in ("build.sh", "run.sh"):
        used |= set(re.findall(r"^\s*setting [A-Z_]+ ([a-z_]+)\s*$", (ROOT / "templates" / script).read_text(), re.M))
    assert {"project_id", "region", "worker_service_account", "dataflow_kms_key", "subnetwork"} <= used
    assert used <= set(tf.outputs), used - set(tf.outputs)


def test_every_checkov_skip_gives_a_reason(tf):
    skips = re.findall(r"#\s*checkov:skip=.*", tf.text)
    for skip in skips:
        assert re.fullmatch(r"#checkov:skip=CKV2?_[A-Z]+_\d+:\S.{10,}", skip.strip()), skip


def test_services_the_resources_need_are_enabled(tf):
    services = tf.of_type("google_project_service")["enabled"]["for_each"]
    for service in ("dataflow", "healthcare", "cloudkms", "artifactregistry", "pubsub", "compute", "storage"):
        assert f"{service}.googleapis.com" in services
