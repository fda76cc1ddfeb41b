"""terraform/ security model (security.tf and the grants it changed), read with python-hcl2.

Who can touch the pseudonym key, the linkage tables and the records: the worker has no objectUser
or objectAdmin on any bucket holding them, reads and deletes only staging files, and the key lives
in Secret Manager with one reader. Data Access audit logs are on and routed to a locked log bucket.
The checks are functions tested on mutated copies as well, so that each one can fail.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.deploy.test_terraform import TF_DIR, Config, _clean
from tests.support.env import REPO_ROOT
from transforms import files
from transforms.records import AUDIT_RELPATH, DEAD_LETTER_RELPATH, linkage_relpath

WORKER = "${google_service_account.worker.member}"
HEALTHCARE_AGENT = '${google_project_service_identity.agent["healthcare.googleapis.com"].email}'
# Buckets that hold records or linkage tables (the key is in no bucket at all).
SENSITIVE = {"data.output", "linkage"}
# What each role may do to objects; predefined roles by their documented permissions.
OBJECT_READ_OR_DELETE = {
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
    "roles/storage.admin",
    "roles/storage.objectViewer",
    "roles/storage.legacyBucketOwner",
    "roles/storage.legacyBucketWriter",
    "roles/storage.legacyObjectReader",
    "roles/storage.legacyObjectOwner",
}
AUDITED = ("storage.googleapis.com", "secretmanager.googleapis.com", "healthcare.googleapis.com")
CREATE_OR_LIST_ONLY = {"roles/storage.objectCreator", "roles/storage.legacyBucketReader"}


@pytest.fixture(scope="module")
def tf() -> Config:
    return Config(TF_DIR)


def _bucket_of(expression: str) -> str:
    """'${google_storage_bucket.data["output"].name}' -> 'data.output'; '...linkage.name}' -> 'linkage';
    the locals-driven grant (data[each.value.bucket]) -> 'data.*'."""
    if expression == "${google_storage_bucket.data[each.value.bucket].name}":
        return "data.*"
    match = re.fullmatch(r'\$\{google_storage_bucket\.([a-z_]+)(?:\["([a-z_-]+)"\])?\.name\}', expression)
    assert match, expression
    return ".".join(part for part in match.groups() if part)


def _condition(body: dict[str, Any]) -> str:
    """The binding's condition expression as Terraform sends it (python-hcl2 keeps the \\" escapes)."""
    return str((body.get("condition") or [{}])[0].get("expression", "")).replace('\\"', '"')


def worker_bucket_grants(tf: Config) -> list[dict[str, Any]]:
    """Every bucket role the worker holds: (bucket, role, condition expression or '')."""
    grants = [
        {"bucket": f"data.{r['bucket']}", "role": r["role"], "condition": ""}
        for r in tf.locals["worker_bucket_roles"].values()
    ]
    for name, body in tf.of_type("google_storage_bucket_iam_member").items():
        if body.get("member") != WORKER or name == "worker":  # "worker" is the locals map above
            continue
        roles = [body["role"]]
        if body.get("for_each") and body["role"] == "${each.value}":
            roles = re.findall(r'"(roles/[^"]+)"', str(body["for_each"]))
        condition = _condition(body)
        grants += [{"bucket": _bucket_of(body["bucket"]), "role": role, "condition": condition} for role in roles]
    return grants


def custom_role_permissions(tf: Config, role: str) -> set[str]:
    match = re.fullmatch(r"\$\{google_project_iam_custom_role\.([a-z_]+)\.id\}", role)
    return set(tf.of_type("google_project_iam_custom_role")[match.group(1)]["permissions"]) if match else set()


def sensitive_grant_problems(tf: Config, grants: list[dict[str, Any]]) -> list[str]:
    """Grants that let the worker read, replace or delete a record or a linkage table."""
    problems = []
    for grant in grants:
        if grant["bucket"] not in SENSITIVE:
            continue
        role, condition = grant["role"], grant["condition"]
        where = f"{grant['bucket']}: {role}"
        if role in {"roles/storage.objectUser", "roles/storage.objectAdmin", "roles/storage.admin"}:
            problems.append(f"{where} (objectUser/objectAdmin where records or linkage live)")
        elif role in CREATE_OR_LIST_ONLY:
            continue
        elif grant["bucket"] == "linkage":
            problems.append(f"{where}: the linkage bucket allows only create and list")
        elif role == "roles/storage.objectViewer":
            if not re.fullmatch(
                r'resource\.name\.startsWith\(".+/objects/"\) && resource\.name\.endsWith\("\.dcm"\)', condition
            ):
                problems.append(f"{where} without the .dcm condition")
        elif custom_role_permissions(tf, role):
            if not custom_role_permissions(tf, role) <= {"storage.objects.get", "storage.objects.delete"}:
                problems.append(f"{where}: the staging role holds more than get and delete")
            if f'resource.name.endsWith("{files.STAGING_SUFFIX}")' not in condition:
                problems.append(f"{where} without the {files.STAGING_SUFFIX} staging condition")
        else:
            problems.append(f"{where}: unknown role")
    return problems


def test_the_worker_cannot_read_replace_or_delete_records_or_linkage(tf: Config) -> None:
    grants = worker_bucket_grants(tf)
    buckets = {g["bucket"] for g in grants}
    assert buckets >= SENSITIVE and "data.audit" not in buckets  # the old key+linkage bucket is gone
    assert sensitive_grant_problems(tf, grants) == []
    on_linkage = {g["role"] for g in grants if g["bucket"] == "linkage"}
    assert on_linkage == {"roles/storage.objectCreator", "roles/storage.legacyBucketReader"}
    unconditional = {g["role"] for g in grants if g["bucket"] == "data.output" and not g["condition"]}
    assert unconditional == {"roles/storage.objectCreator", "roles/storage.legacyBucketReader"}
    # objectUser only where nothing sensitive lives (Beam's temp files, WSI scratch).
    assert {g["bucket"] for g in grants if g["role"] == "roles/storage.objectUser"} == {"data.temp"}


@pytest.mark.parametrize(
    ("grant", "complaint"),
    [
        ({"bucket": "data.output", "role": "roles/storage.objectUser", "condition": ""}, "objectUser/objectAdmin"),
        ({"bucket": "linkage", "role": "roles/storage.objectAdmin", "condition": ""}, "objectUser/objectAdmin"),
        ({"bucket": "linkage", "role": "roles/storage.objectViewer", "condition": ""}, "only create and list"),
        ({"bucket": "data.output", "role": "roles/storage.objectViewer", "condition": ""}, ".dcm condition"),
        (
            {"bucket": "data.output", "role": "${google_project_iam_custom_role.staging.id}", "condition": ""},
            "staging condition",
        ),
    ],
)
def test_the_grant_check_catches_drift(tf: Config, grant: dict[str, Any], complaint: str) -> None:
    problems = sensitive_grant_problems(tf, [*worker_bucket_grants(tf), grant])
    assert any(complaint in p for p in problems), problems


def test_the_code_stages_and_names_what_the_conditions_assume(tmp_path: Path) -> None:
    """The staging condition (.part) and the DICOM read condition (.dcm) must match the code."""
    assert files._staging_path(str(tmp_path)).endswith(files.STAGING_SUFFIX)
    assert files._staging_path(str(tmp_path), "run-1").endswith(files.STAGING_SUFFIX)
    records = [AUDIT_RELPATH, DEAD_LETTER_RELPATH, "runs/{run_id}.json", linkage_relpath("uid")]
    assert not [r for r in records if r.endswith((files.STAGING_SUFFIX, ".dcm"))]
    main_py = (REPO_ROOT / "pipeline" / "main.py").read_text()
    assert 'f"probe-{uuid.uuid4().hex}.part"' in main_py  # the launcher's writability probe is deletable


def test_the_key_is_a_cmek_secret_without_a_value_with_one_reader(tf: Config) -> None:
    secret = tf.of_type("google_secret_manager_secret")["deid_key"]
    replica = secret["replication"][0]["user_managed"][0]["replicas"][0]
    assert (
        replica["customer_managed_encryption"][0]["kms_key_name"] == '${google_kms_crypto_key.key["secret-manager"].id}'
    )
    assert secret["lifecycle"][0]["prevent_destroy"] is True
    assert not tf.of_type("google_secret_manager_secret_version")  # the value never enters the state
    grants = [
        (kind, body) for (kind, _), body in tf.resources.items() if kind.startswith("google_secret_manager_secret_iam")
    ]
    assert [(k, b["role"], b["member"]) for k, b in grants] == [
        ("google_secret_manager_secret_iam_member", "roles/secretmanager.secretAccessor", WORKER)
    ]
    assert "secretmanager.googleapis.com" in tf.of_type("google_project_service")["enabled"]["for_each"]
    assert "secretmanager.googleapis.com" in tf.of_type("google_project_service_identity")["agent"]["for_each"]
    assert tf.outputs["deid_key_secret"]["value"].endswith("/versions/1")


def test_linkage_bucket_keeps_every_table_and_only_readers_read(tf: Config) -> None:
    bucket = tf.of_type("google_storage_bucket")["linkage"]
    policy = bucket["retention_policy"][0]
    assert policy["retention_period"] == "${var.linkage_retention_days * 86400}"
    assert tf.variables["linkage_retention_days"]["default"] >= 30
    assert not (bucket.get("versioning") or [{}])[0].get("enabled")  # excluded by the retention policy
    assert "#checkov:skip=CKV_GCP_78:Object Versioning cannot be enabled" in tf.raw_block(
        "google_storage_bucket", "linkage"
    )
    readers = tf.of_type("google_storage_bucket_iam_member")["reidentification_readers"]
    assert readers["for_each"] == "${toset(var.reidentification_readers)}"
    assert readers["role"] == "roles/storage.objectViewer" and _bucket_of(readers["bucket"]) == "linkage"
    assert tf.variables["reidentification_readers"]["default"] == []
    # Nobody else is granted anything on it but the worker (create, list).
    others = [
        (n, b["role"])
        for n, b in tf.of_type("google_storage_bucket_iam_member").items()
        if _bucket_of(b["bucket"]) == "linkage" and n not in {"reidentification_readers", "worker_linkage"}
    ]
    assert others == []


def audit_config_problems(configs: dict[str, dict[str, Any]], locals_: dict[str, Any]) -> list[str]:
    problems = []
    for name, body in configs.items():
        services = locals_["audited_services"] if "local.audited_services" in str(body.get("for_each")) else []
        kinds = {c["log_type"] for c in body.get("audit_log_config", [])}
        if not {"DATA_READ", "DATA_WRITE"} <= kinds:
            problems.append(f"{name}: DATA_READ and DATA_WRITE not both on")
        if any(c.get("exempted_members") for c in body.get("audit_log_config", [])):
            problems.append(f"{name}: members exempted from the audit log")
        missing = set(AUDITED) - set(services)
        if missing:
            problems.append(f"{name}: no audit config for {sorted(missing)}")
    return problems or ([] if configs else ["no google_project_iam_audit_config at all"])


def test_data_access_logs_are_on_and_kept_in_a_locked_bucket(tf: Config) -> None:
    configs = tf.of_type("google_project_iam_audit_config")
    assert audit_config_problems(configs, tf.locals) == []
    broken = copy.deepcopy(configs)
    broken["data_access"]["audit_log_config"] = [{"log_type": "DATA_READ"}]
    assert audit_config_problems(broken, tf.locals) == ["data_access: DATA_READ and DATA_WRITE not both on"]
    assert audit_config_problems({}, tf.locals) == ["no google_project_iam_audit_config at all"]

    bucket = tf.of_type("google_logging_project_bucket_config")["data_access"]
    assert (
        bucket["locked"] == "${var.lock_audit_log_bucket}" and tf.variables["lock_audit_log_bucket"]["default"] is True
    )
    assert bucket["cmek_settings"][0]["kms_key_name"] == '${google_kms_crypto_key.key["logging"].id}'
    sink = tf.of_type("google_logging_project_sink")["data_access"]
    assert sink["destination"] == "logging.googleapis.com/${google_logging_project_bucket_config.data_access.id}"
    assert sink["filter"] == "${local.data_access_filter}"
    text = (TF_DIR / "security.tf").read_text()
    assert 'log_id(\\"cloudaudit.googleapis.com/data_access\\")' in text
    assert set(tf.locals["audited_services"]) == set(AUDITED)


def test_the_healthcare_agent_gets_only_export_and_import_prefixes(tf: Config) -> None:
    grants = {
        name: body
        for name, body in tf.of_type("google_storage_bucket_iam_member").items()
        if HEALTHCARE_AGENT in body.get("member", "")
    }
    assert {n: (b["role"], _bucket_of(b["bucket"])) for n, b in grants.items()} == {
        "healthcare_export": ("roles/storage.objectCreator", "data.output"),
        "healthcare_import": ("roles/storage.objectViewer", "data.input"),
    }
    export, imports = _condition(grants["healthcare_export"]), _condition(grants["healthcare_import"])
    for expression, prefix in ((export, "healthcare_export_prefix"), (imports, "healthcare_import_prefix")):
        assert re.fullmatch(rf'resource\.name\.startsWith\(".+/objects/\$\{{local\.{prefix}\}}"\)', expression)
    assert "objectAdmin" not in (TF_DIR / "healthcare.tf").read_text()


def test_vpc_service_controls_are_optional_and_off_by_default(tf: Config) -> None:
    assert tf.variables["vpc_sc_access_policy"]["default"] == ""
    perimeter = tf.of_type("google_access_context_manager_service_perimeter")["data"]
    assert perimeter["count"] == '${var.vpc_sc_access_policy != "" ? 1 : 0}'
    assert perimeter["status"][0]["restricted_services"] == "${local.perimeter_services}"
    assert {"storage.googleapis.com", "healthcare.googleapis.com", "secretmanager.googleapis.com"} <= set(
        tf.locals["perimeter_services"]
    )


def test_resource_names_are_unique_across_files() -> None:
    """Several .tf files are written by different people: a (type, name) pair may appear once."""
    seen: Counter[tuple[str, str, str]] = Counter()
    for path in sorted(TF_DIR.glob("*.tf")):
        with path.open(encoding="utf-8") as handle:
            parsed = _clean(hcl2.load(handle))
        for section in ("resource", "data"):
            for block in parsed.get(section, []):
                for kind, named in block.items():
                    for name in named:
                        seen[(section, kind, name)] += 1
        for section in ("variable", "output"):
            for block in parsed.get(section, []):
                for name in block:
                    seen[(section, "", name)] += 1
    assert [key for key, count in seen.items() if count > 1] == []


def test_readme_explains_the_security_model_and_the_root_image() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Security model", 1)[1].split("\n## ", 1)[0]
    for words in (
        "secretAccessor",
        "objectCreator",
        "reidentification_readers",
        "DATA_READ",
        "gcloud secrets versions add",
    ):
        assert words in section, words
    assert "root" in section and "USER" in section  # why the worker image does not drop root
    assert "runs as root" in (REPO_ROOT / "Dockerfile").read_text()
