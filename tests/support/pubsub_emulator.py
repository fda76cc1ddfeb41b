"""The real Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator, a Java server), started
on 127.0.0.1 on an ephemeral port and stopped by its PID.

    with pubsub_emulator(tmp_path) as pubsub:           # sets PUBSUB_EMULATOR_HOST while it runs
        topic, subscription = pubsub.topic_and_subscription("uploads")
        pubsub.publish_gcs_notification(topic, "gs://bucket/in/a.dcm")

google-cloud-pubsub clients (the pipeline's Pub/Sub pulls, and these helpers) talk to whatever
PUBSUB_EMULATOR_HOST names. Tests that need it skip cleanly when the package is not installed
(`scripts/install_system_deps.sh` installs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.gcs_emulator import free_port, stop

EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
PROJECT = "local-test"


def emulator_available() -> bool:
    return EMULATOR.is_file() and os.access(EMULATOR, os.X_OK)


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Pub/Sub emulator exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the Pub/Sub emulator did not listen on port {port} within {timeout_s} s")


@dataclass
class PubSub:
    host: str

    def publisher(self) -> Any:
        from google.cloud import pubsub_v1

        return pubsub_v1.PublisherClient()

    def subscriber(self) -> Any:
        from google.cloud import pubsub_v1

        return pubsub_v1.SubscriberClient()

    def topic_and_subscription(
        self, name: str, ack_deadline_s: int = 60, dead_letter_topic: str | None = None, max_attempts: int = 5
    ) -> tuple[str, str]:
        """A new topic and a pull subscription on it (optionally with a dead-letter policy)."""
        suffix = uuid.uuid4().hex[:8]
        topic = f"projects/{PROJECT}/topics/{name}-{suffix}"
        subscription = f"projects/{PROJECT}/subscriptions/{name}-{suffix}"
        self.publisher().create_topic(name=topic)
        request: dict[str, Any] = {"name": subscription, "topic": topic, "ack_deadline_seconds": ack_deadline_s}
        if dead_letter_topic:
            request["dead_letter_policy"] = {
                "dead_letter_topic": dead_letter_topic,
                "max_delivery_attempts": max_attempts,
            }
        with self.subscriber() as client:
            client.create_subscription(request=request)
        return topic, subscription

    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        future = self.publisher().publish(topic, data, **attributes)
        return str(future.result(timeout=30))

    def publish_gcs_notification(self, topic: str, uri: str, size: int = 0, event: str = "OBJECT_FINALIZE") -> str:
        """A message as Cloud Storage sends it (JSON_API_V1 payload) for the object `uri`."""
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        payload = json.dumps({"kind": "storage#object", "bucket": bucket, "name": name, "size": str(size)})
        return self.publish(
            topic,
            payload.encode(),
            eventType=event,
            bucketId=bucket,
            objectId=name,
            objectGeneration=str(time.time_ns()),
            payloadFormat="JSON_API_V1",
            notificationConfig=f"projects/_/buckets/{bucket}/notificationConfigs/1",
        )

    def pending(self, subscription: str) -> int:
        """How many messages a pull returns now (they are left unacknowledged)."""
        with self.subscriber() as client:
            response = client.pull(subscription=subscription, max_messages=100, return_immediately=True)
            ids = [m.ack_id for m in response.received_messages]
            if ids:
                client.modify_ack_deadline(subscription=subscription, ack_ids=ids, ack_deadline_seconds=0)
        return len(ids)


@contextlib.contextmanager
def pubsub_emulator(data_dir: Path) -> Iterator[PubSub]:
    """Start the emulator; PUBSUB_EMULATOR_HOST points at it until the block ends."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "emulator.log").open("wb") as log:
        process = subprocess.Popen(
            [str(EMULATOR), "--host=127.0.0.1", f"--port={port}", f"--data-dir={data_dir}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # the script execs java, so this PID is the server's
    host = f"127.0.0.1:{port}"
    saved = os.environ.get("PUBSUB_EMULATOR_HOST")
    try:
        _wait_port(port, process)
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        yield PubSub(host)
    finally:
        stop(process)
        if saved is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = saved
