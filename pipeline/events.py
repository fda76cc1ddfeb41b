"""The event mode's launcher: `--input_subscription` and `--watch` (README "Event-driven mode").

On a remote runner (Dataflow) this submits one streaming job: Pub/Sub subscriptions read with
ReadFromPubSub, `--input` polled with Watch (transforms/event_sources.py), then the event graph
(transforms/events.py). Stopping it is Dataflow's: drain (finish what was read, then stop) or update.

On a local runner the same graph runs in rounds, because Beam 2.77's in-process runners cannot run
it live: the FnApiRunner runs an unbounded source's stage to its end before the stages after it,
and the BundleBasedDirectRunner (the DirectRunner's streaming engine) cannot run splittable DoFns
(Watch, PeriodicImpulse, MatchContinuously) and can neither drain ReadFromPubSub nor move its
watermark while no message comes. So this process polls (`LocalPoller`: Pub/Sub pulls with
return_immediately, listings of --input) for `--window_seconds`, then runs the graph over what it
gathered as one bounded FnApiRunner run, in this process; messages are acknowledged once their
round completed (its records written), so a failed round's messages are delivered again. Units
that have not settled by the round's end wait for the next round (transforms.events.Carry).
SIGINT or SIGTERM drains: polling stops, a last round takes what is pending, and the run ends with
exit status 0 and its manifest (`runs/<run id>.json`, outcome "drained").
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.gcp.pubsub import PubsubMessage, parse_subscription
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.transforms.environments import EmbeddedPythonEnvironment
from google.cloud.pubsub_v1 import SubscriberClient

from deid.cloud.healthcare import DEFAULT_ENDPOINT, check_store_name
from deid.errors import ConfigError
from deid.settings import RunSettings, split_list
from pipeline.manifest import MANIFEST_RELPATH, options_record
from pipeline.options import DeidOptions
from transforms.event_sources import EventSources, notice_version, watched_notices
from transforms.events import DeidentifyEvents, EventSettings, RoundItems
from transforms.files import output_path, remove_tree, run_staging_dir, write_record
from transforms.listing import input_pattern
from transforms.round_feed import drop_feed, feed
from transforms.window_records import WINDOW_MANIFEST

_LOG = logging.getLogger("deid")
# A pulled message's ack deadline is pushed to this before its round runs (Pub/Sub's maximum).
ACK_EXTENSION_S = 600


def event_mode(options: DeidOptions) -> bool:
    """Whether the run is the event mode's (--input_subscription or --watch)."""
    return bool(options.input_subscription or options.watch)


def event_settings(options: DeidOptions) -> EventSettings:
    """Check the event mode's options (ConfigError, exit 2) and freeze them."""
    subscriptions = subscriptions_of(options)
    for name in subscriptions:
        try:
            parse_subscription(name)  # Beam's own rule, which ReadFromPubSub applies
        except ValueError:
            raise ConfigError(
                "--input_subscription: expected projects/PROJECT/subscriptions/NAME (comma-separated), "
                "with a valid project id"
            ) from None
    if options.watch and not options.input:
        raise ConfigError("--watch needs --input: the local directory or gs:// prefix to poll")
    if subscriptions and not (options.input or options.healthcare_source_store):
        raise ConfigError(
            "--input_subscription needs --input (the gs:// prefix whose objects notifications name) "
            "or --healthcare_source_store (the DICOM store whose instances they name)"
        )
    refused = [
        name
        for name, given in (
            ("--dicomweb_source", options.dicomweb_source),
            ("--linkage_output", options.linkage_output),
            ("--qa_report", options.qa_report),
            ("--healthcare_export_output", options.healthcare_export_output),
        )
        if given
    ]
    if refused:
        raise ConfigError(f"{', '.join(refused)} cannot be used in the event mode (--input_subscription, --watch)")
    if options.watch and options.settle_seconds <= options.watch_interval:
        raise ConfigError(
            "--settle_seconds must exceed --watch_interval: a file still being written must be seen "
            "changing again before it is taken"
        )
    source_store = destination_url = source_url = None
    endpoint = (options.healthcare_api_endpoint or DEFAULT_ENDPOINT).rstrip("/")
    if options.healthcare_source_store:
        source_store = check_store_name("--healthcare_source_store", options.healthcare_source_store)
        source_url = f"{endpoint}/{source_store}/dicomWeb"
    if options.healthcare_destination_store:
        store = check_store_name("--healthcare_destination_store", options.healthcare_destination_store)
        destination_url = f"{endpoint}/{store}/dicomWeb"
    if options.dicomweb_destination:
        destination_url = options.dicomweb_destination
    if source_store and not destination_url:
        raise ConfigError(
            "--healthcare_source_store in the event mode needs --healthcare_destination_store or "
            "--dicomweb_destination: where the de-identified instances go"
        )
    return EventSettings(
        window_s=options.window_seconds,
        settle_s=options.settle_seconds,
        input_location=options.input or None,
        source_store=source_store,
        source_url=source_url,
        destination_url=destination_url,
        source_google=bool(source_store),
        destination_google=bool(options.healthcare_destination_store) and not options.dicomweb_destination,
    )


def subscriptions_of(options: DeidOptions) -> list[str]:
    return list(split_list(options.input_subscription or ""))


def run_events(options: PipelineOptions, settings: RunSettings, started: dt.datetime) -> Any:
    """Run the event mode with the launcher's checked options and settings (pipeline.main.run)."""
    deid_options = options.view_as(DeidOptions)
    events = event_settings(deid_options)
    standard = options.view_as(StandardOptions)
    runner = str(standard.runner or "")
    if runner not in StandardOptions.LOCAL_RUNNERS and "Dataflow" not in runner:
        raise ConfigError("the event mode runs locally (no --runner) or on Dataflow (--runner=DataflowRunner)")
    if "Dataflow" in runner:
        standard.streaming = True
        pipeline = beam.Pipeline(options=options)
        _ = (
            pipeline
            | "Events"
            >> EventSources(
                subscriptions_of(deid_options),
                deid_options.input if deid_options.watch else None,
                deid_options.watch_interval,
                settings.output,
            )
            | "Deidentify" >> DeidentifyEvents(settings, events)
        )
        result = pipeline.run()
        write_event_manifest(settings, options, started, "submitted", 0, rounds=0)
        return result
    return LocalEventRun(options, settings, events, started).run()


class LocalPoller:
    """What a local round gathers: pulled Pub/Sub messages (acknowledged after the round) and notices
    of files under a watched --input that are new or changed since the last poll."""

    def __init__(self, subscriptions: Sequence[str], watch_input: str | None, output: str) -> None:
        self._subscriptions = list(subscriptions)
        self._pattern = input_pattern(watch_input) if watch_input else None
        self._output = output
        self._seen: set[tuple[str, int, str]] = set()
        self._client: Any = SubscriberClient() if self._subscriptions else None
        self.acks: dict[str, list[str]] = {name: [] for name in self._subscriptions}

    def poll(self) -> list[tuple[object, float]]:
        now = time.time()
        found: list[tuple[object, float]] = []
        if self._pattern is not None:
            for notice in watched_notices(self._pattern, self._output, now):
                version = notice_version(notice)
                if version not in self._seen:
                    self._seen.add(version)
                    found.append((notice, now))
        for name in self._subscriptions:
            response = self._client.pull(subscription=name, max_messages=500, return_immediately=True, timeout=30)
            for received in response.received_messages:
                message = received.message
                found.append(
                    (PubsubMessage(message.data, dict(message.attributes), message_id=message.message_id), now)
                )
                self.acks[name].append(received.ack_id)
        return found

    def extend(self) -> None:
        """Keep this round's messages from being delivered again while it runs."""
        for name, ids in self.acks.items():
            for chunk in _chunks(ids):
                self._client.modify_ack_deadline(subscription=name, ack_ids=chunk, ack_deadline_seconds=ACK_EXTENSION_S)

    def acknowledge(self) -> None:
        for name, ids in self.acks.items():
            for chunk in _chunks(ids):
                self._client.acknowledge(subscription=name, ack_ids=chunk)
            ids.clear()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _chunks(ids: list[str], size: int = 1000) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


_RUNNING: set[threading.Event] = set()


def request_drain() -> None:
    """Drain every local event run of this process, as SIGTERM does (for callers that run
    `pipeline.main.main` in a thread, where signal handlers cannot be installed)."""
    for stop in list(_RUNNING):
        stop.set()


class LocalEventRun:
    """Rounds of polling and bounded runs until SIGINT/SIGTERM or `request_drain` (module docstring)."""

    def __init__(self, options: PipelineOptions, settings: RunSettings, events: EventSettings, started: dt.datetime):
        self._options = options
        self._settings = settings
        self._events = events
        self._started = started
        self._feed_id = f"{settings.run_id}-{uuid.uuid4().hex[:8]}"
        self.stop = threading.Event()
        direct = options.view_as(DirectOptions)
        # One process: the rounds' DoFns share the feed with this launcher.
        direct.direct_running_mode, direct.direct_num_workers = "in_memory", 1
        # Built once, run once per round: building and translating the graph costs more than a
        # round of a few inputs.
        self._runner = fn_runner.FnApiRunner()
        self._pipeline = beam.Pipeline(runner=self._runner, options=options)
        self._proto: beam_runner_api_pb2.Pipeline | None = None
        _ = (
            self._pipeline
            | "Notices" >> RoundItems(self._feed_id)
            | "Deidentify" >> DeidentifyEvents(settings, dataclasses.replace(events, feed_id=self._feed_id))
        )

    def run(self) -> None:
        deid_options = self._options.view_as(DeidOptions)
        poller = LocalPoller(
            subscriptions_of(deid_options), deid_options.input if deid_options.watch else None, self._settings.output
        )
        rounds = 0
        outcome, status = "failed", 1
        _RUNNING.add(self.stop)
        try:
            with _stop_on_signals(self.stop):
                _LOG.warning(
                    "event mode: polling every %s s, a round every %s s; stop with Ctrl-C or SIGTERM (drains)",
                    min(deid_options.watch_interval, self._events.window_s) if deid_options.watch else 1,
                    self._events.window_s,
                )
                while True:
                    gathered = self._gather(poller, deid_options)
                    draining = self.stop.is_set()
                    carried = feed(self._feed_id).take_left()
                    if gathered or carried:
                        poller.extend()
                        began = time.monotonic()
                        self._round(rounds, carried + gathered, draining)
                        _LOG.info(
                            "event mode: round %d took %.1f s for %d new and %d waiting notices",
                            rounds,
                            time.monotonic() - began,
                            len(gathered),
                            len(carried),
                        )
                        rounds += 1
                    poller.acknowledge()
                    if draining:
                        break
            outcome, status = "drained", 0
        finally:
            _RUNNING.discard(self.stop)
            poller.close()
            drop_feed(self._feed_id)
            remove_tree(run_staging_dir(self._settings.output, self._settings.run_id))
            if self._settings.scratch_location:
                remove_tree(self._settings.scratch_location)
            with contextlib.suppress(Exception) if status else contextlib.nullcontext():
                write_event_manifest(self._settings, self._options, self._started, outcome, status, rounds)

    def _gather(self, poller: LocalPoller, options: DeidOptions) -> list[tuple[object, float]]:
        interval = min(options.watch_interval, self._events.window_s) if options.watch else 1
        deadline = time.monotonic() + self._events.window_s
        gathered: list[tuple[object, float]] = []
        while True:
            gathered += poller.poll()
            if self.stop.is_set() or time.monotonic() >= deadline:
                return gathered
            self.stop.wait(min(interval, max(0.0, deadline - time.monotonic())))

    def _round(self, number: int, items: list[tuple[object, float]], draining: bool) -> None:
        current = feed(self._feed_id)
        current.items, current.number, current.draining = items, number, draining
        try:
            if self._proto is None:
                self._pipeline.run().wait_until_finish()
                # The graph as the runner ran it; later rounds skip translating it again.
                self._proto = self._pipeline.to_runner_api(default_environment=EmbeddedPythonEnvironment.default())
            else:
                proto = beam_runner_api_pb2.Pipeline()
                proto.CopyFrom(self._proto)
                self._runner.run_via_runner_api(proto, self._options).wait_until_finish()
        finally:
            current.items = []


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (a drain) instead of killing the run; only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        _LOG.warning("event mode: draining (finishing the current round, then stopping)")
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def window_manifests(output: str, run_id: str) -> list[dict[str, Any]]:
    """The run's window entries (runs/<run id>/window-*.json), oldest first."""
    pattern = output_path(output, WINDOW_MANIFEST.format(run_id=run_id, part="*"))
    try:
        found = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - no window written yet
        return []
    entries = []
    for path in found:
        with FileSystems.open(path) as handle:
            entries.append(json.loads(handle.read()))
    return entries


def write_event_manifest(
    settings: RunSettings, options: PipelineOptions, started: dt.datetime, outcome: str, status: int, rounds: int
) -> str:
    """runs/<run id>.json of an event run, written once when it ends (or is submitted): its window
    entries and record files, counts summed over them, and the options as the batch manifest has them."""
    run_id = settings.run_id
    entries = window_manifests(settings.output, run_id) if outcome != "submitted" else []
    totals: dict[str, dict[str, int]] = {"status": {}, "kind": {}, "error_kind": {}}
    for entry in entries:
        for name, counter in totals.items():
            for value, count in entry.get("counts", {}).get(name, {}).items():
                counter[value] = counter.get(value, 0) + count
    body = {
        "run_id": run_id,
        "mode": "events",
        "started": started.isoformat(timespec="seconds"),
        "ended": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "outcome": outcome,
        "exit_status": status,
        "rounds": rounds,
        "windows": f"runs/{run_id}/",
        "records": {
            "audit": [f for entry in entries for k, f in sorted(entry.get("records", {}).items()) if k == "audit"],
            "dead_letter": [
                f for entry in entries for k, f in sorted(entry.get("records", {}).items()) if k == "dead_letter"
            ],
        },
        "counts": {"inputs": sum(totals["status"].values()), **totals},
        "options": options_record(options),
    }
    return write_record(
        settings.output, MANIFEST_RELPATH.format(run_id=run_id), json.dumps(body, indent=2, sort_keys=True).encode()
    )
