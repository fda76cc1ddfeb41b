"""A held input on disk: `OUTPUT/review/<input_sha256>/` and its `review.json`.

Layout of one held input (all paths relative to OUTPUT):

    review/<input_sha256>/review.json           this model (written last: its presence means the
                                                hold is complete)
    review/<input_sha256>/<output relpath>      each de-identified output as approval would publish
                                                it (dicom/<study>/<series>/<sop>.dcm, wsi/<name>.svs)
    review/<input_sha256>/preview-<n>.png       what the reviewer looks at (confident boxes applied)

review.json holds boxes, scores, frames or levels, kinds and statuses of the candidates, counts,
and what the review command needs to check the input again (its size, its format, the profile
options the run used: booleans and keyword lists); never a text value of the input, never a path.
Shared by the pipeline (which writes it) and `python -m pipeline.review` (which reads and updates it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deid.errors import ConfigError
from deid.redaction.confidence import Candidate
from deid.settings import Box, ProfileSettings

REVIEW_DIR = "review"
REVIEW_JSON = "review.json"
DECISIONS_RELPATH = "review/decisions.jsonl"
PAGE_RELPATH = "review/index.html"
FORMAT_VERSION = 1


def held_dir(input_sha256: str) -> str:
    return f"{REVIEW_DIR}/{input_sha256}"


def held_relpath(input_sha256: str, relpath: str) -> str:
    """Where output `relpath` waits while its input is held."""
    return f"{held_dir(input_sha256)}/{relpath}"


@dataclass(frozen=True)
class ReviewCandidate:
    """One numbered candidate as the reviewer sees it (1-based `number`, drawn on the page)."""

    number: int
    box: Box
    score: float
    kind: str
    status: str
    frame: int | None = None  # DICOM frame index
    level: int | None = None  # slide level (0: full resolution)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "number": self.number,
            "box": self.box.as_list(),
            "score": round(self.score, 4),
            "kind": self.kind,
            "status": self.status,
        }
        if self.frame is not None:
            out["frame"] = self.frame
        if self.level is not None:
            out["level"] = self.level
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReviewCandidate:
        return cls(
            number=int(data["number"]),
            box=Box(*(int(v) for v in data["box"])),
            score=float(data["score"]),
            kind=str(data["kind"]),
            status=str(data["status"]),
            frame=None if data.get("frame") is None else int(data["frame"]),
            level=None if data.get("level") is None else int(data["level"]),
        )

    def as_candidate(self) -> Candidate:
        return Candidate(self.box, self.score, self.kind, self.status)


@dataclass(frozen=True)
class Preview:
    """One preview image: `file` under the held folder shows frame/level pixels from `origin` (x, y)
    at `scale` preview pixels per image pixel, `width` x `height` preview pixels."""

    file: str
    width: int
    height: int
    scale: float
    origin: tuple[int, int] = (0, 0)
    frame: int | None = None
    level: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "scale": self.scale,
            "origin": list(self.origin),
            "frame": self.frame,
            "level": self.level,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Preview:
        origin = data.get("origin") or [0, 0]
        return cls(
            file=str(data["file"]),
            width=int(data["width"]),
            height=int(data["height"]),
            scale=float(data["scale"]),
            origin=(int(origin[0]), int(origin[1])),
            frame=None if data.get("frame") is None else int(data["frame"]),
            level=None if data.get("level") is None else int(data["level"]),
        )

    def shows(self, candidate: ReviewCandidate) -> bool:
        """Whether `candidate` lies on this preview's frame or level and overlaps its area."""
        # A reviewer's box without a frame applies to every frame.
        if candidate.frame is not None and candidate.frame != self.frame:
            return False
        if (candidate.level or 0) != (self.level or 0):
            return False
        x0, y0 = self.origin
        x1, y1 = x0 + self.width / self.scale, y0 + self.height / self.scale
        box = candidate.box
        return box.x < x1 and box.x + box.width > x0 and box.y < y1 and box.y + box.height > y0


@dataclass(frozen=True)
class HeldInput:
    """review.json of one held input (see the module docstring)."""

    input_sha256: str
    kind: str
    reason: str
    threshold: float
    run_id: str
    outputs: tuple[str, ...]
    candidates: tuple[ReviewCandidate, ...] = ()
    previews: tuple[Preview, ...] = ()
    actions: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, object] = field(default_factory=dict)
    input_size: int = 0
    subtype: str = ""
    # Hashes of every file of a multi-file input (a DICOM-WSI series), first file first.
    unit_sha256: tuple[str, ...] = ()
    profile: Mapping[str, object] = field(default_factory=dict)
    # '' publishes under OUTPUT; 'dicomweb' stores into a DICOMweb destination.
    destination: str = ""
    image_size: tuple[int, int] = (0, 0)
    frames: int = 1

    @property
    def pending(self) -> tuple[ReviewCandidate, ...]:
        return tuple(c for c in self.candidates if c.status == "pending")

    def held_paths(self) -> list[str]:
        return [held_relpath(self.input_sha256, relpath) for relpath in self.outputs]

    def profile_settings(self) -> ProfileSettings:
        fields = {f.name for f in dataclasses.fields(ProfileSettings)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.profile.items() if k in fields}
        return ProfileSettings(**values)  # type: ignore[arg-type]

    def to_json(self) -> str:
        body = {
            "version": FORMAT_VERSION,
            "input_sha256": self.input_sha256,
            "kind": self.kind,
            "reason": self.reason,
            "threshold": self.threshold,
            "run_id": self.run_id,
            "outputs": list(self.outputs),
            "candidates": [c.to_json() for c in self.candidates],
            "previews": [p.to_json() for p in self.previews],
            "actions": dict(sorted(self.actions.items())),
            "details": dict(self.details),
            "input_size": self.input_size,
            "subtype": self.subtype,
            "unit_sha256": list(self.unit_sha256),
            "profile": dict(self.profile),
            "destination": self.destination,
            "image_size": list(self.image_size),
            "frames": self.frames,
        }
        return json.dumps(body, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> HeldInput:
        try:
            data = json.loads(text)
            if int(data.get("version", 0)) != FORMAT_VERSION:
                raise ConfigError(f"review.json format {data.get('version')} is not {FORMAT_VERSION}")
            return cls(
                input_sha256=str(data["input_sha256"]),
                kind=str(data["kind"]),
                reason=str(data["reason"]),
                threshold=float(data["threshold"]),
                run_id=str(data["run_id"]),
                outputs=tuple(str(o) for o in data["outputs"]),
                candidates=tuple(ReviewCandidate.from_json(c) for c in data.get("candidates", [])),
                previews=tuple(Preview.from_json(p) for p in data.get("previews", [])),
                actions={str(k): int(v) for k, v in data.get("actions", {}).items()},
                details=dict(data.get("details", {})),
                input_size=int(data.get("input_size", 0)),
                subtype=str(data.get("subtype", "")),
                unit_sha256=tuple(str(s) for s in data.get("unit_sha256", [])),
                profile=dict(data.get("profile", {})),
                destination=str(data.get("destination", "")),
                image_size=(int(data.get("image_size", [0, 0])[0]), int(data.get("image_size", [0, 0])[1])),
                frames=int(data.get("frames", 1)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"review.json is malformed ({type(exc).__name__})") from None


def numbered(items: list[tuple[Candidate, int | None, int | None]]) -> tuple[ReviewCandidate, ...]:
    """(candidate, frame, level) -> numbered ReviewCandidates, pending first, then by score, frame, position."""
    order = sorted(
        items,
        key=lambda t: (t[0].status != "pending", t[1] or 0, t[2] or 0, t[0].box.y, t[0].box.x, -t[0].score),
    )
    return tuple(
        ReviewCandidate(index, c.box, c.score, c.kind, c.status, frame, level)
        for index, (c, frame, level) in enumerate(order, start=1)
    )


def profile_record(profile: ProfileSettings) -> dict[str, object]:
    """The profile options as review.json keeps them (booleans, keyword lists; no input value)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(profile).items()}
