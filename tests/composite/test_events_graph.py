"""The event graph (transforms/events.py) run as a local event run runs it, and built as the
streaming job Dataflow would get: a MIRAX slide noticed file by file is one unit and one record, a
notice that has not settled waits for the next round, the next round takes nothing OUTPUT already
recorded, and the streaming graph reads every subscription with ReadFromPubSub and polls --input
with Watch."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from deid.keys import DeidKey
from deid.settings import Limits, RunSettings
from tests.support.env import BEAM_TEST_ARGS
from tests.support.mirax_factory import write_mirax
from transforms.event_sources import EventSources, watched_notices
from transforms.events import DeidentifyEvents, EventSettings, RoundItems
from transforms.notices import ObjectNotice
from transforms.round_feed import drop_feed, feed


def _settings(output: Path, max_file_bytes: int = Limits().max_file_bytes) -> RunSettings:
    return RunSettings(
        output=str(output),
        key_token=DeidKey.generate().to_token(),
        run_id="test-run",
        limits=Limits(max_file_bytes=max_file_bytes),
    )


def _audit(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for path in (out / "audit").glob("*.jsonl") for line in path.read_text().splitlines()]


def test_a_mirax_slide_is_one_unit_and_an_unsettled_notice_waits(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    write_mirax(source)
    (source / "late.bin").write_bytes(b"still arriving")
    past = time.time() - 60
    items: list[tuple[object, float]] = [(n, past) for n in watched_notices(f"{source}/**", str(out), past)]
    slide_files = len(items)
    items.append((items[0][0], past))  # the same file noticed twice
    late = ObjectNotice(path=str(source / "late.bin"), noticed_at=time.time(), size=14, version="1", watched=True)
    items = [(n, t) for n, t in items if getattr(n, "path", "") != late.path] + [(late, late.noticed_at)]
    feed_id = f"test-{uuid.uuid4().hex}"
    events = EventSettings(window_s=60, settle_s=30, input_location=str(source), feed_id=feed_id)
    p = beam.Pipeline(options=PipelineOptions(BEAM_TEST_ARGS))
    # A limit the slide is over: its one record is a dead letter before the (slow) slide branch.
    _ = p | RoundItems(feed_id) | DeidentifyEvents(_settings(out, max_file_bytes=1000), events)
    try:
        feed(feed_id).items = items
        p.run().wait_until_finish()
        left = feed(feed_id).take_left()
        first = _audit(out)
        feed(feed_id).items, feed(feed_id).number = items[:-1] + left, 1  # all again, a round later
        p.run().wait_until_finish()
        left_again = feed(feed_id).take_left()
    finally:
        drop_feed(feed_id)
    assert slide_files == 5  # slide.mrxs and its folder's Slidedat.ini, Index.dat, Data0000.dat, late.bin
    assert [(r["kind"], r["status"], r["error_kind"]) for r in first] == [("wsi", "dead_letter", "too_large")]
    assert [item for item, _ in left] == [late] and [item for item, _ in left_again] == [late]
    assert _audit(out) == first  # the second round recorded nothing again
    assert len(list((out / "events" / "recorded").iterdir())) == 1
    window = json.loads(next((out / "runs" / "test-run").glob("window-*.json")).read_text())
    assert window["counts"]["inputs"] == 1 and window["window"]["round"] == 0


def test_the_streaming_graph_reads_each_subscription_and_watches_the_input(tmp_path: Path) -> None:
    options = PipelineOptions(["--streaming", "--no_auth"])
    subscriptions = ["projects/my-project/subscriptions/uploads", "projects/my-project/subscriptions/dicom"]
    events = EventSettings(window_s=60, settle_s=30, input_location="gs://in/")
    p = beam.Pipeline(options=options)
    _ = p | EventSources(subscriptions, "gs://in/", 10, "gs://out/") | DeidentifyEvents(_settings(tmp_path), events)
    proto = p.to_runner_api()
    names = [t.unique_name for t in proto.components.transforms.values()]
    assert sum(name.endswith("/Subscription0") or name.endswith("/Subscription1") for name in names) == 2
    assert any(name.endswith("/Watch") for name in names)
    assert any("ClaimOnce/FirstClaim" in name for name in names)
    assert any("WriteWindowRecords/WriteFiles" in name for name in names)
