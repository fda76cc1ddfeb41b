"""The one rule that decides whether an input is published or held for review.

An input is held, with reason `uncertain`, when a text candidate of it is pending: it scored below
--review_threshold and no redacted box covers it (deid/redaction/confidence.py); with reason
`sampled` when it would be published but its keyed sample number falls below --review_sample_rate.
The sample number is `DeidKey.fraction("review-sample", input_sha256)`: the same key holds the same
inputs in every run, and the held fraction converges to the rate. Threshold 0 holds nothing as
uncertain; rate 0 samples nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from deid.keys import DeidKey
from deid.redaction.confidence import Candidate

UNCERTAIN = "uncertain"
SAMPLED = "sampled"
REASONS = (UNCERTAIN, SAMPLED)
SAMPLE_PURPOSE = "review-sample"


def sampled(key: DeidKey, input_sha256: str, rate: float) -> bool:
    """Whether the input is in the run's keyed sample of `rate` (0..1)."""
    return rate > 0.0 and key.fraction(SAMPLE_PURPOSE, input_sha256) < rate


def review_reason(
    candidates: Iterable[Candidate], threshold: float, sample_rate: float, key: DeidKey, input_sha256: str
) -> str | None:
    """`uncertain`, `sampled` or None (publish): see the module docstring."""
    if threshold > 0.0 and any(c.pending and c.score < threshold for c in candidates):
        return UNCERTAIN
    if sampled(key, input_sha256, sample_rate):
        return SAMPLED
    return None
