"""Audit and dead-letter records (see CONTRACTS.md). They carry counts and hashes, never values."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["dicom", "wsi", "unknown"]
Status = Literal["ok", "dead_letter", "needs_review"]


@dataclass(frozen=True)
class AuditRecord:
    input_sha256: str
    kind: Kind
    status: Status
    outputs: tuple[str, ...] = ()
    actions: Mapping[str, int] = field(default_factory=dict)
    error_kind: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)
    # Set on the record a review decision adds (python -m pipeline.review): 'approved' or 'rejected'.
    reviewed: str | None = None

    def to_json(self) -> str:
        record: dict[str, object] = {
            "input_sha256": self.input_sha256,
            "kind": self.kind,
            "status": self.status,
            "outputs": list(self.outputs),
            "actions": dict(sorted(self.actions.items())),
        }
        if self.error_kind:
            record["error_kind"] = self.error_kind
        if self.reviewed:
            record["reviewed"] = self.reviewed
        if self.details:
            record["details"] = dict(self.details)
        return json.dumps(record, sort_keys=True)


@dataclass(frozen=True)
class DeadLetterRecord:
    input_sha256: str
    error_kind: str
    message: str
    kind: Kind = "unknown"

    def to_json(self) -> str:
        return json.dumps(
            {
                "input_sha256": self.input_sha256,
                "error_kind": self.error_kind,
                "message": self.message,
                "kind": self.kind,
            },
            sort_keys=True,
        )

    def to_audit(self) -> AuditRecord:
        return AuditRecord(self.input_sha256, self.kind, "dead_letter", error_kind=self.error_kind)


def merge_counts(counts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, value in one.items():
            total[key] = total.get(key, 0) + value
    return total
