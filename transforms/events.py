"""The event mode's graph: notices in, the batch branches' per-input code, records per window out.

    notices -> TakeSettled -> ClassifyPaths -> ClaimOnce -> admit -> DICOM / slide branches -> WriteWindowRecords
    (messages, watched files)   (units)          (once)       (FixedWindows)   (transforms/window_records.py)

- **Settle.** Notices are keyed by unit (`transforms.notices.unit_key`: a MIRAX slide's `.mrxs` file
  with its folder's files, any other object alone) into session windows with a gap of
  `settle_s`: a unit is taken `settle_s` seconds after its last notice (`_SettleFn`). A watched file
  is taken only if its size and modification time are still those last noticed (else a later poll
  notices it again). DICOM-WSI files, once classified, wait the same way per series
  (`SettleSeries`): a series is taken `settle_s` after its last instance was taken.
- **Once.** Each input is claimed once per job by its content hash (a DICOM store instance by the hash
  of its address), with Beam's DeduplicatePerKey in the global window, and skipped when this OUTPUT
  already recorded it (`transforms.window_records.recorded_elsewhere`). Outputs are named by content
  and key, so the same input always lands on the same output path with the same bytes.
- **Windows.** After the claim, everything runs in FixedWindows of `window_s` seconds; each window's
  records are new files (transforms/window_records.py).

On Dataflow a session window fires when the watermark passes its end, so a unit is always settled.
A local run goes in rounds (pipeline/events.py): each round is a bounded run over the notices of
the last `window_s` seconds, at whose end every window closes; a unit not yet settled by the wall
clock then waits for the next round (transforms/round_feed.py), unless the run is draining, when
notified objects are taken as they are and watched files still changing are left for the next start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import window
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.utils.timestamp import Duration

from deid.classify import InputRef
from deid.cloud.dicomweb import InstanceKey
from deid.cloud.healthcare import default_session
from deid.keys import DeidKey
from deid.records import DeadLetterRecord
from deid.settings import RunSettings
from transforms.common import METRICS_NAMESPACE, DeidOutputs, ToDeadLetters, load_run_key
from transforms.dicom import deidentify_instances
from transforms.dicomweb import SOURCE_SCHEME
from transforms.listing import ClassifyPaths, admit, in_listing, input_pattern
from transforms.notices import (
    MIRAX_UNIT,
    BadNotice,
    Ignored,
    InstanceNotice,
    ObjectNotice,
    current_version,
    mirax_index,
    parse_message,
    path_exists,
    unit_key,
)
from transforms.records import dead_letter_audit
from transforms.round_feed import carrying, feed
from transforms.window_records import WriteWindowRecords, recorded_elsewhere
from transforms.wsi import DeidentifyWsi, KeyDicomSeries

UNSETTLED = "unsettled"
INVALID_NOTIFICATION = "invalid_notification"
# How long a claim is remembered inside one job; after that only OUTPUT's recorded markers count.
CLAIM_HORIZON_S = 7 * 24 * 3600


@dataclass(frozen=True)
class EventSettings:
    """The event mode's options, frozen for workers (built by pipeline/events.py)."""

    window_s: int
    settle_s: int
    # --input as a pattern: notified objects outside it are ignored; None takes no objects.
    input_location: str | None = None
    # Instances of this DICOM store are fetched from `source_url`; other stores' are ignored.
    source_store: str | None = None
    source_url: str | None = field(default=None, repr=False)
    destination_url: str | None = field(default=None, repr=False)
    # Which DICOMweb servers are Cloud Healthcare stores, reached with Google credentials.
    source_google: bool = False
    destination_google: bool = False
    # A local run's rounds (transforms/round_feed.py); None on Dataflow.
    feed_id: str | None = None


@dataclass(frozen=True)
class CarriedMember:
    """A DICOM-WSI file taken in an earlier round whose series had not settled (local rounds)."""

    ref: InputRef


def _count(name: str) -> None:
    Metrics.counter(METRICS_NAMESPACE, f"events_{name}").inc()


class _ParseFn(beam.DoFn):
    """PubsubMessage -> ObjectNotice / InstanceNotice / BadNotice (Ignored ones are counted and
    dropped); ObjectNotice (a watched file) and CarriedMember pass through. Objects outside --input or
    under OUTPUT and instances of other stores are ignored."""

    def __init__(self, events: EventSettings, output: str) -> None:
        self._events = events
        self._output = output.rstrip("/") + "/"

    def setup(self) -> None:
        location = self._events.input_location
        self._pattern = input_pattern(location) if location else None

    def process(self, element: object, timestamp: Any = beam.DoFn.TimestampParam) -> Iterator[object]:
        if isinstance(element, PubsubMessage):
            element = parse_message(element.data or b"", element.attributes or {}, float(timestamp))
        if isinstance(element, Ignored):
            _count(f"ignored_{element.why}")
            return
        if isinstance(element, ObjectNotice) and not self._in_scope(element.path):
            _count("ignored_outside_input")
            return
        if isinstance(element, InstanceNotice) and element.store != self._events.source_store:
            _count("ignored_other_store")
            return
        yield element

    def _in_scope(self, path: str) -> bool:
        return self._pattern is not None and in_listing(path, self._pattern, self._output)


class _FeedFn(beam.DoFn):
    """feed id -> this local round's items, each at its event time."""

    def process(self, feed_id: str) -> Iterator[window.TimestampedValue]:
        for item, at in feed(feed_id).items:
            yield window.TimestampedValue(item, at)


class RoundItems(beam.PTransform):
    """PBegin -> the items the launcher put in the feed for this round (a local event run)."""

    def __init__(self, feed_id: str) -> None:
        super().__init__()
        self._feed_id = feed_id

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return pbegin | "FeedId" >> beam.Create([self._feed_id], reshuffle=False) | "Items" >> beam.ParDo(_FeedFn())


class _SettleFn(beam.DoFn):
    """(unit key, [ObjectNotice]) in a session window -> the path(s) to classify, once settled.

    Settled: the wall clock is past the session's end (its last notice + settle_s), and a watched
    file's size and mtime are still the last noticed. Not yet settled (only at the end of a local
    round, or at a drain): in a local round the notices wait for the next (UNSETTLED); at a drain
    (the last round, or Dataflow's) notified objects are taken and watched files left alone.
    """

    def __init__(self, feed_id: str | None) -> None:
        self._feed_id = feed_id

    def process(self, group: tuple[str, Iterable[ObjectNotice]], win: Any = beam.DoFn.WindowParam) -> Iterator[object]:
        key, notices = group[0], sorted(group[1], key=lambda n: n.noticed_at)
        settled = time.time() >= float(win.end)
        if not settled and carrying(self._feed_id):
            for notice in notices:
                yield TaggedOutput(UNSETTLED, notice)
            return
        latest: dict[str, ObjectNotice] = {}
        for notice in notices:
            latest[notice.path] = notice
        for path, notice in list(latest.items()):
            if notice.watched and (not settled or current_version(path) != (notice.size, notice.version)):
                _count("not_yet_complete")  # a later poll notices it again once it changed
                del latest[path]
        if not latest:
            return
        if key.endswith(MIRAX_UNIT):
            index = mirax_index(key, latest.values(), path_exists)
            if index is not None:
                yield index  # ClassifyPaths lists its folder: the whole unit, once
                return
        yield from sorted(latest)


class _CarryFn(beam.DoFn):
    """Keeps what has not settled for the next local round, at its own event time."""

    def __init__(self, feed_id: str) -> None:
        self._feed_id = feed_id

    def process(self, item: object, timestamp: Any = beam.DoFn.TimestampParam) -> None:
        at = item.noticed_at if isinstance(item, ObjectNotice) else float(timestamp)
        feed(self._feed_id).carry(item, at)
        _count("carried")


class TakeSettled(beam.PTransform):
    """PCollection[ObjectNotice] (event time: when noticed) -> PCollection[str] of paths to classify."""

    def __init__(self, settle_s: int, feed_id: str | None) -> None:
        super().__init__()
        self._settle_s = settle_s
        self._feed_id = feed_id

    def expand(self, notices: beam.PCollection) -> beam.PCollection:
        settled = (
            notices
            | "ByUnit" >> beam.Map(lambda n: (unit_key(n.path, path_exists), n))
            | "Sessions" >> beam.WindowInto(window.Sessions(self._settle_s))
            | "Group" >> beam.GroupByKey()
            | "Settle" >> beam.ParDo(_SettleFn(self._feed_id)).with_outputs(UNSETTLED, main="paths")
        )
        if self._feed_id is not None:
            _ = settled[UNSETTLED] | "Carry" >> beam.ParDo(_CarryFn(self._feed_id))
        return settled["paths"]


class _SeriesSettledFn(beam.DoFn):
    """(series key, [InputRef]) in a session window -> each InputRef once the series settled; else
    (local round) every member waits for the next round, at the time of the last one."""

    def __init__(self, settle_s: int, feed_id: str | None) -> None:
        self._settle_s = settle_s
        self._feed_id = feed_id

    def process(self, group: tuple[str, Iterable[InputRef]], win: Any = beam.DoFn.WindowParam) -> Iterator[object]:
        refs = sorted(group[1], key=lambda r: r.path)
        if carrying(self._feed_id) and time.time() < float(win.end):
            for ref in refs:
                yield TaggedOutput(
                    UNSETTLED, window.TimestampedValue(CarriedMember(ref), float(win.end) - self._settle_s)
                )
            return
        yield from refs


class SettleSeries(beam.PTransform):
    """(PCollection[InputRef] of DICOM-WSI files, PCollection[CarriedMember]) -> (settled InputRefs in
    FixedWindows, DeadLetterRecords of files without a SeriesInstanceUID)."""

    def __init__(self, settings: RunSettings, events: EventSettings) -> None:
        super().__init__()
        self._settings = settings
        self._events = events

    def expand(self, pcolls: tuple[beam.PCollection, beam.PCollection]) -> tuple[beam.PCollection, beam.PCollection]:
        refs, carried = pcolls
        events = self._events
        sessions = window.Sessions(events.settle_s)
        members = (
            refs | "Rewindow" >> beam.WindowInto(sessions),
            carried | "CarriedRefs" >> beam.Map(lambda c: c.ref) | "CarriedSessions" >> beam.WindowInto(sessions),
        ) | "Members" >> beam.Flatten()
        keyed, bad = members | "KeyBySeries" >> beam.ParDo(KeyDicomSeries(self._settings)).with_exception_handling()
        settled = (
            keyed
            | "GroupSeries" >> beam.GroupByKey()
            | "Settled"
            >> beam.ParDo(_SeriesSettledFn(events.settle_s, events.feed_id)).with_outputs(UNSETTLED, main="refs")
        )
        if events.feed_id is not None:
            _ = settled[UNSETTLED] | "CarrySeries" >> beam.ParDo(_CarryFn(events.feed_id))
        fixed = settled["refs"] | "Windows" >> beam.WindowInto(window.FixedWindows(events.window_s))
        dead = (
            bad | "NoSeries" >> ToDeadLetters() | "DeadWindows" >> beam.WindowInto(window.FixedWindows(events.window_s))
        )
        return fixed, dead


class _BadNoticeFn(beam.DoFn):
    """BadNotice -> DeadLetterRecord `invalid_notification`, named by a keyed hash of the message."""

    def __init__(self, settings: RunSettings) -> None:
        self._settings = settings
        self._key: DeidKey | None = None

    def setup(self) -> None:
        self._key = load_run_key(self._settings)

    def process(self, notice: BadNotice) -> Iterator[DeadLetterRecord]:
        assert self._key is not None
        _count("invalid_notification")
        message = f"{notice.reason}; its input_sha256 is a keyed hash of the message data, which names nothing to take"
        yield DeadLetterRecord(self._key.path_id("pubsub-message:" + notice.digest_of), INVALID_NOTIFICATION, message)


def _instance_element(notice: InstanceNotice) -> tuple[str, tuple[InputRef, InstanceKey]]:
    key = notice.key
    ref = InputRef(path=f"{SOURCE_SCHEME}:{key.ref_hash()}", size=0, sha256=key.ref_hash(), kind="dicom")
    return ref.sha256, (ref, key)


class _NotRecordedFn(beam.DoFn):
    """(claim key, element) -> element, unless OUTPUT already recorded that input (by content hash;
    a DICOM store instance is known by its content only once fetched, so its records are checked
    when written)."""

    def __init__(self, output: str) -> None:
        self._output = output

    def process(self, item: tuple[str, object]) -> Iterator[object]:
        claim, element = item
        if not isinstance(element, tuple) and recorded_elsewhere(self._output, claim, None):
            _count("already_recorded")
            return
        yield element


class ClaimOnce(beam.PTransform):
    """PCollection[(claim key, element)] in the global window -> the elements claimed for the first
    time, in FixedWindows."""

    def __init__(self, output: str, window_s: int) -> None:
        super().__init__()
        self._output = output
        self._window_s = window_s

    def expand(self, keyed: beam.PCollection) -> beam.PCollection:
        return (
            keyed
            | "FirstClaim" >> DeduplicatePerKey(event_time_duration=Duration(seconds=CLAIM_HORIZON_S))
            | "NotRecorded" >> beam.ParDo(_NotRecordedFn(self._output))
            | "Windows" >> beam.WindowInto(window.FixedWindows(self._window_s))
        )


class _PartitionBy(beam.PartitionFn):
    """A Partition by a function of the element alone."""

    def __init__(self, fn: Callable[[Any], int]) -> None:
        self._fn = fn

    def partition_for(self, element: object, num_partitions: int, *args: object, **kwargs: object) -> int:
        return self._fn(element)


def _by_type(element: object) -> int:
    """0 InputRef (a file), 1 (InputRef, InstanceKey) (a store instance), 2 DeadLetterRecord."""
    if isinstance(element, InputRef):
        return 0
    return 1 if isinstance(element, tuple) else 2


def _by_source(element: object) -> int:
    """0 messages and watched files, 1 series members carried from an earlier local round."""
    return 1 if isinstance(element, CarriedMember) else 0


def _by_notice(element: object) -> int:
    if isinstance(element, ObjectNotice):
        return 0
    return 1 if isinstance(element, InstanceNotice) else 2


def _by_kind(ref: InputRef) -> int:
    """0 DICOM, 1 a slide of one file or a MIRAX unit, 2 a DICOM-WSI file (grouped by series)."""
    if ref.kind != "wsi":
        return 0
    return 2 if ref.subtype == "dicom-wsi" else 1


class _DicomBranch(beam.PTransform):
    """PCollection[(InputRef, InstanceKey | None)] -> DeidOutputs: transforms.dicom's DoFns, with the
    DICOM store of the notifications as the DICOMweb source."""

    def __init__(self, settings: RunSettings, events: EventSettings) -> None:
        super().__init__()
        self._settings = settings
        self._events = events

    def expand(self, elements: beam.PCollection) -> DeidOutputs:
        events = self._events
        return deidentify_instances(
            elements,
            self._settings,
            events.source_url,
            events.destination_url,
            source_session=default_session if events.source_google else None,
            destination_session=default_session if events.destination_google else None,
        )


class DeidentifyEvents(beam.PTransform):
    """PCollection of PubsubMessage / ObjectNotice / CarriedMember -> (audit, dead letters), records
    written per window under settings.output (module docstring)."""

    def __init__(self, settings: RunSettings, events: EventSettings) -> None:
        super().__init__()
        self._settings = settings
        self._events = events

    def expand(self, incoming: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        settings, events = self._settings, self._events
        fresh, carried = incoming | "BySource" >> beam.Partition(_PartitionBy(_by_source), 2)
        notices = fresh | "Parse" >> beam.ParDo(_ParseFn(events, settings.output))
        objects, instances, bad = notices | "ByNotice" >> beam.Partition(_PartitionBy(_by_notice), 3)

        keyed: list[beam.PCollection] = []
        if events.input_location:
            pattern = input_pattern(events.input_location)
            paths = objects | "TakeSettled" >> TakeSettled(events.settle_s, events.feed_id)
            refs, not_read = paths | "Classify" >> ClassifyPaths(pattern, settings.output, settings)
            keyed += [
                refs | "ClaimRefs" >> beam.Map(lambda r: (r.sha256, r)),
                not_read | "ClaimNotRead" >> beam.Map(lambda d: (d.input_sha256, d)),
            ]
        keyed += [
            instances | "ClaimInstances" >> beam.Map(_instance_element),
            bad
            | "BadNotices" >> beam.ParDo(_BadNoticeFn(settings))
            | "ClaimBad" >> beam.Map(lambda d: (d.input_sha256, d)),
        ]
        claimed = (
            [pcoll | f"Global{index}" >> beam.WindowInto(window.GlobalWindows()) for index, pcoll in enumerate(keyed)]
            | "AllClaims" >> beam.Flatten().with_output_types(tuple[str, Any])
            | "ClaimOnce" >> ClaimOnce(settings.output, events.window_s)
        )
        files, store_instances, not_taken = claimed | "ByType" >> beam.Partition(_PartitionBy(_by_type), 3)

        admitted = files | "Admit" >> beam.Map(admit, settings.limits.max_file_bytes).with_exception_handling(
            main_tag="admitted", dead_letter_tag="refused"
        )
        dicom_refs, slides, series_files = admitted["admitted"] | "ByKind" >> beam.Partition(_PartitionBy(_by_kind), 3)
        series, no_series = (series_files, carried) | "SettleSeries" >> SettleSeries(settings, events)
        wsi = (slides, series) | "AllSlides" >> beam.Flatten() | "Wsi" >> DeidentifyWsi(settings)
        elements = (
            dicom_refs | "FromFiles" >> beam.Map(lambda ref: (ref, None)),
            store_instances,
        ) | "DicomElements" >> beam.Flatten()
        dicom = elements | "Dicom" >> _DicomBranch(settings, events)

        dead = (
            dicom.dead_letters,
            wsi.dead_letters,
            admitted["refused"] | "Refused" >> ToDeadLetters(),
            not_taken,
            no_series,
        ) | "AllDeadLetters" >> beam.Flatten()
        audit = (
            dicom.audit,
            wsi.audit,
            dead | "DeadLetterAudit" >> beam.Map(dead_letter_audit),
        ) | "AllAudit" >> beam.Flatten()
        _ = (audit, dead) | "WriteWindowRecords" >> WriteWindowRecords(settings.output, settings.run_id, events.feed_id)
        return audit, dead
