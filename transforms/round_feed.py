"""What a local event run's rounds share with its launcher (pipeline/events.py), in one process.

A local event run builds its graph once and runs it once per round (the FnApiRunner, in memory).
The launcher puts the round's notices in the feed before each run (`Feed.items`), and the graph's
DoFns read the round's number and whether the run is draining, and leave units that have not
settled for the next round (`Feed.carry`). On Dataflow there is no feed (feed_id None): one
streaming job, round 0.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Feed:
    """One local event run's rounds: this round's (item, event time) pairs, the ones left for the
    next round, the round's number and whether it is the last (a drain)."""

    items: list[tuple[object, float]] = field(default_factory=list)
    number: int = 0
    draining: bool = False
    _left: list[tuple[object, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def carry(self, item: object, timestamp: float) -> None:
        with self._lock:
            self._left.append((item, timestamp))

    def take_left(self) -> list[tuple[object, float]]:
        with self._lock:
            left, self._left = self._left, []
        return left


_FEEDS: dict[str, Feed] = {}


def feed(feed_id: str) -> Feed:
    return _FEEDS.setdefault(feed_id, Feed())


def drop_feed(feed_id: str) -> None:
    _FEEDS.pop(feed_id, None)


def round_number(feed_id: str | None) -> int:
    return feed(feed_id).number if feed_id else 0


def carrying(feed_id: str | None) -> bool:
    """Whether units that have not settled wait for another round (a local run, not draining)."""
    return feed_id is not None and not feed(feed_id).draining
