"""Bounded exponential backoff with full jitter, shared by every HTTP client in deid.cloud."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# Statuses worth another try: rate limiting and server-side trouble. Every other 4xx is final.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Backoff:
    """`attempts` tries in all; the n-th wait is uniform in [0.5, 1] x min(cap, initial x factor^n)."""

    attempts: int = 6
    initial_s: float = 1.0
    cap_s: float = 32.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_s < 0 or self.cap_s < self.initial_s or self.factor < 1:
            raise ValueError("Backoff needs attempts >= 1, 0 <= initial_s <= cap_s and factor >= 1")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between tries: `attempts - 1` of them."""
        rng = rng or random.Random()
        for n in range(self.attempts - 1):
            yield self.delay(n, rng)

    def delay(self, n: int, rng: random.Random) -> float:
        ceiling = min(self.cap_s, self.initial_s * self.factor**n)
        return ceiling * rng.uniform(0.5, 1.0)


def retry_after_seconds(header: str | None, cap_s: float) -> float | None:
    """The Retry-After header in seconds (delta form only), capped; None when absent or unparsable."""
    if not header:
        return None
    try:
        return min(cap_s, max(0.0, float(header)))
    except ValueError:
        return None
