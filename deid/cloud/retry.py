"""Bounded exponential backoff with full jitter, shared by every HTTP client in deid.cloud, and the
one retry loop of the REST clients (`send_with_retries`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import requests
from google.auth.exceptions import RefreshError, TransportError

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


def send_with_retries(
    send: Callable[[], requests.Response],
    delays: Iterator[float],
    pause: Callable[[float, str], None],
    *,
    refresh_failed: Callable[[], Exception],
    unreachable: Callable[[str], Exception],
    retry_after_cap_s: float | None = None,
) -> tuple[requests.Response, bool]:
    """Call `send` again, after `pause(seconds, reason)` for each of `delays`, while the connection
    fails or the answer is a RETRYABLE_STATUSES one; return (the last response, whether it was still
    retryable when the delays ran out).

    Credentials that cannot be refreshed raise `refresh_failed()`; a connection failure on the last
    try raises `unreachable(exception type name)` (never the exception's text, which can quote the
    request). With `retry_after_cap_s`, a Retry-After header (capped) replaces the backoff's wait.
    """
    while True:
        try:
            response = send()
        except RefreshError:
            raise refresh_failed() from None
        except (requests.ConnectionError, requests.Timeout, TransportError) as exc:
            wait = next(delays, None)
            if wait is None:
                raise unreachable(type(exc).__name__) from None
            pause(wait, type(exc).__name__)
            continue
        if response.status_code not in RETRYABLE_STATUSES:
            return response, False
        wait = next(delays, None)
        if wait is None:
            return response, True
        if retry_after_cap_s is not None:
            hinted = retry_after_seconds(response.headers.get("Retry-After"), retry_after_cap_s)
            wait = hinted if hinted is not None else wait
        pause(wait, str(response.status_code))
