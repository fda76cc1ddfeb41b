"""terraform/streaming.tf read with python-hcl2: the event mode's Pub/Sub wiring, its IAM and the
streaming job (checkov and `terraform fmt` run in scripts/lint_infra.sh)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.deploy.test_terraform import TF_DIR, Config, job_parameter_problems, metadata_names

DEAD_LETTER_TOPIC = "${google_pubsub_topic.dead_letter.id}"


@pytest.fixture(scope="module")
def tf() -> Config:
    return Config(TF_DIR)


def subscription_problems(name: str, body: dict[str, Any]) -> list[str]:
    problems = []
    policy = (body.get("dead_letter_policy") or [{}])[0]
    if policy.get("dead_letter_topic") != DEAD_LETTER_TOPIC:
        problems.append(f"{name}: no dead-letter topic")
    if int(body.get("ack_deadline_seconds", 10)) < 600:
        problems.append(f"{name}: ack deadline below a local round's 600 s")
    if (body.get("expiration_policy") or [{}])[0].get("ttl") != "":
        problems.append(f"{name}: expires while no job reads it")
    return problems


def test_topics_are_cmek_and_kept_in_the_region(tf: Config) -> None:
    topics = tf.of_type("google_pubsub_topic")
    for name in ("uploads", "dead_letter", "dicom_notifications"):
        assert topics[name]["kms_key_name"] == '${google_kms_crypto_key.key["pubsub"].id}', name
        assert topics[name]["message_storage_policy"][0]["allowed_persistence_regions"] == ["${var.region}"], name


def test_the_input_bucket_notifies_new_objects(tf: Config) -> None:
    notification = tf.of_type("google_storage_notification")["uploads"]
    assert notification["bucket"] == '${google_storage_bucket.data["input"].name}'
    assert notification["event_types"] == ["OBJECT_FINALIZE"]
    assert notification["payload_format"] == "JSON_API_V1"
    assert notification["topic"] == "${google_pubsub_topic.uploads.id}"
    assert notification["depends_on"] == ["${google_pubsub_topic_iam_member.storage_publisher}"]
    grant = tf.of_type("google_pubsub_topic_iam_member")["storage_publisher"]
    assert (grant["topic"], grant["role"], grant["member"]) == (
        "${google_pubsub_topic.uploads.id}",
        "roles/pubsub.publisher",
        "${local.storage_agent}",
    )


def test_both_subscriptions_dead_letter_and_never_expire(tf: Config) -> None:
    subs = tf.of_type("google_pubsub_subscription")
    assert subs["uploads"]["topic"] == "${google_pubsub_topic.uploads.id}"
    assert subs["dicom"]["topic"] == "${google_pubsub_topic.dicom_notifications.id}"
    assert subs["dead_letter"]["topic"] == DEAD_LETTER_TOPIC
    assert [p for name in ("uploads", "dicom") for p in subscription_problems(name, subs[name])] == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda b: b.pop("dead_letter_policy"), "dead-letter"),
        (lambda b: b.update(ack_deadline_seconds=10), "ack deadline"),
        (lambda b: b.pop("expiration_policy"), "expires"),
    ],
)
def test_subscription_check_catches_drift(tf: Config, mutate: Any, expected: str) -> None:
    body = copy.deepcopy(tf.of_type("google_pubsub_subscription")["uploads"])
    mutate(body)
    assert any(expected in p for p in subscription_problems("uploads", body))


def test_dead_lettering_is_granted_to_the_pubsub_agent(tf: Config) -> None:
    assert "pubsub.googleapis.com" in tf.locals["pubsub_agent"]
    publisher = tf.of_type("google_pubsub_topic_iam_member")["dead_letter_publisher"]
    assert (publisher["topic"], publisher["role"], publisher["member"]) == (
        DEAD_LETTER_TOPIC,
        "roles/pubsub.publisher",
        "${local.pubsub_agent}",
    )
    forwarder = tf.of_type("google_pubsub_subscription_iam_member")["dead_letter_forwarder"]
    assert (forwarder["role"], forwarder["member"]) == ("roles/pubsub.subscriber", "${local.pubsub_agent}")


def test_worker_may_only_pull_from_the_two_subscriptions(tf: Config) -> None:
    assert set(tf.locals["event_subscriptions"]) == {"uploads", "dicom"}
    grants = tf.of_type("google_pubsub_subscription_iam_member")
    worker = {name: g for name, g in grants.items() if g["member"] == "${google_service_account.worker.member}"}
    assert {g["role"] for g in worker.values()} == {"roles/pubsub.subscriber", "roles/pubsub.viewer"}
    assert all(g["for_each"] == "${local.event_subscriptions}" for g in worker.values())
    topic_grants = tf.of_type("google_pubsub_topic_iam_member").values()
    assert not [g for g in topic_grants if g["member"] == "${google_service_account.worker.member}"]


def test_streaming_job_is_off_by_default_private_cmek_and_drains(tf: Config) -> None:
    assert tf.variables["streaming"]["default"] is False
    job = tf.of_type("google_dataflow_flex_template_job")["streaming"]
    assert job["count"] == "${var.streaming ? 1 : 0}"
    assert job["container_spec_gcs_path"] == "${local.template_spec_path}"  # the same Flex Template
    assert job["ip_configuration"] == "WORKER_IP_PRIVATE"
    assert job["kms_key_name"] == '${google_kms_crypto_key.key["dataflow"].id}'
    assert job["service_account_email"] == "${google_service_account.worker.email}"
    assert job["enable_streaming_engine"] is True
    assert job["on_delete"] == "drain"


def test_streaming_job_parameters_exist_in_metadata(tf: Config) -> None:
    job = tf.of_type("google_dataflow_flex_template_job")["streaming"]
    assert job_parameter_problems(job, tf.locals, metadata_names()) == []
    defaults = tf.locals["streaming_default_parameters"]
    assert defaults["input_subscription"] == (
        "${google_pubsub_subscription.uploads.id},${google_pubsub_subscription.dicom.id}"
    )
    assert {"input", "output", "healthcare_source_store", "healthcare_destination_store"} <= set(defaults)
    assert "streaming_parameters" in str(tf.locals["streaming_parameters"])
    assert "templates/metadata.json" in str(tf.variables["streaming_parameters"]["validation"])
    precondition = job["lifecycle"][0]["precondition"][0]["condition"]
    assert "local.template_parameter_names" in precondition and "local.streaming_parameters" in precondition
    locals_ = copy.deepcopy(tf.locals)
    locals_["streaming_default_parameters"]["subscription"] = "x"
    assert job_parameter_problems(job, locals_, metadata_names()) == [
        "local.streaming_default_parameters: 'subscription' not in metadata.json"
    ]
