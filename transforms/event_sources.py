"""Where the event mode's notices come from on a streaming runner (Dataflow): Pub/Sub subscriptions
read with Beam's ReadFromPubSub, and `--input` polled with Beam's Watch. A local run polls with the
same functions from its launcher instead (pipeline/events.py), because Beam 2.77's in-process
runners cannot run these sources live (README "Event-driven mode").
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.io.watch import PollResult, Watch
from apache_beam.utils.timestamp import Timestamp

from transforms.listing import input_pattern, own_file
from transforms.notices import ObjectNotice, poll_files


def watched_notices(pattern: str, output: str, now: float) -> list[ObjectNotice]:
    """One poll of `pattern`: a watched ObjectNotice per file (not under OUTPUT or our .tmp/)."""
    return [
        ObjectNotice(path=path, noticed_at=now, size=size, version=str(mtime_ns), watched=True)
        for path, size, mtime_ns in poll_files(pattern, lambda p: own_file(p, output))
    ]


def notice_version(notice: ObjectNotice) -> tuple[str, int, str]:
    """What makes a watched file new again: its path, size and modification time."""
    return notice.path, notice.size, notice.version


class _PollFiles:
    """Watch's poll function: every file under the pattern, stamped with the poll time."""

    def __init__(self, output: str) -> None:
        self._output = output

    def __call__(self, pattern: str) -> PollResult:
        now = Timestamp.now()
        notices = watched_notices(pattern, self._output, float(now))
        return PollResult.incomplete(notices, timestamp=now).with_watermark(now)


class EventSources(beam.PTransform):
    """PBegin -> PCollection of PubsubMessage (each subscription) and watched ObjectNotice (--watch)."""

    def __init__(
        self, subscriptions: Sequence[str], watch_input: str | None, watch_interval_s: int, output: str
    ) -> None:
        super().__init__()
        self._subscriptions = tuple(subscriptions)
        self._watch_input = watch_input
        self._interval = watch_interval_s
        self._output = output

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        parts = [
            pbegin | f"Subscription{index}" >> ReadFromPubSub(subscription=name, with_attributes=True)
            for index, name in enumerate(self._subscriptions)
        ]
        if self._watch_input:
            parts.append(
                pbegin
                | "WatchPattern" >> beam.Create([input_pattern(self._watch_input)])
                | "Watch" >> Watch(_PollFiles(self._output), poll_interval=self._interval, output_key_fn=notice_version)
                | "Notices" >> beam.Values()
            )
        return parts | "AllSources" >> beam.Flatten()
