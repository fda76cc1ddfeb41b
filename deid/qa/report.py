"""The QA report: one self-contained HTML page a reviewer can look at instead of reading logs.

`build_report(entries, summary, records, dead_letters)` returns the page: a run summary (numbers
from the audit records), an inline SVG bar chart of per-stage time, and per input a before/after
thumbnail pair (PNG embedded as data: URIs), the redaction boxes drawn on the after thumbnail,
label/macro disposition, action counts and passthrough vs re-encoded tiles. A dead-lettered input
shows its error kind and the dead-letter message (which never quotes an input value) instead of
thumbnails. No script, font, stylesheet or image is loaded from anywhere else.

Inputs are named by the first 12 hex digits of their sha256, never by file name. Before
thumbnails are made in memory only (`before_thumbnail`): downsampled to at most BEFORE_MAX_SIDE
pixels and blurred, so no text in them is readable; the page says so.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pydicom.pixels import pixel_array

from deid.settings import Box

BEFORE_MAX_SIDE = 40
BEFORE_BLUR_SIGMA = 1.2
AFTER_MAX_SIDE = 320
BOX_COLOUR_BGR = (0, 0, 255)


@dataclass(frozen=True)
class QaEntry:
    """What one input contributes to the report. Picklable; carries no value read from the input."""

    input_sha256: str
    kind: str = "unknown"
    before_png: bytes | None = field(default=None, repr=False)
    after_png: bytes | None = field(default=None, repr=False)
    boxes: int = 0
    label: str = ""  # 'dropped', 'blanked', 'redacted', 'kept', 'absent' or '' (not a slide)
    macro: str = ""
    tiles_passthrough: int = 0
    tiles_reencoded: int = 0
    stage_seconds: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    inputs: int = 0
    ok: int = 0
    dead_letter: int = 0
    needs_review: int = 0
    leaks: int = 0
    outputs: int = 0
    by_kind: Mapping[str, int] = field(default_factory=dict)
    error_kinds: Mapping[str, int] = field(default_factory=dict)
    actions: Mapping[str, int] = field(default_factory=dict)
    stage_seconds: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    entry: QaEntry
    status: str
    error_kind: str
    actions: Mapping[str, int]
    outputs: int
    reason: str = ""


# ---------------------------------------------------------------------------------------------
# Thumbnails
# ---------------------------------------------------------------------------------------------


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any 2-D/3-D numeric image (grey, RGB, RGBA, 16-bit, float) as 8-bit BGR for OpenCV."""

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        data = array.astype(np.float64)
        low, high = float(np.nanmin(data)) if data.size else 0.0, float(np.nanmax(data)) if data.size else 1.0
        scale = 255.0 / (high - low) if high > low else 0.0
        array = np.nan_to_num((data - low) * scale).clip(0, 255).astype(np.uint8)
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_RGBA2BGR)
    return cv2.cvtColor(np.ascontiguousarray(array[..., :3]), cv2.COLOR_RGB2BGR)


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:

    height, width = image.shape[:2]
    factor = min(1.0, max_side / max(height, width, 1))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


def _png(image: np.ndarray) -> bytes:

    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("could not encode a thumbnail as PNG")
    return encoded.tobytes()


def before_thumbnail(image: np.ndarray, max_side: int = BEFORE_MAX_SIDE) -> bytes:
    """A PNG of the input image so small and blurred that no text in it can be read."""

    small, _ = _shrink(to_rgb8(image), max_side)
    return _png(cv2.GaussianBlur(small, (0, 0), BEFORE_BLUR_SIGMA))


def after_thumbnail(
    image: np.ndarray,
    boxes: Iterable[Box | Sequence[int]] = (),
    source_size: tuple[int, int] | None = None,
    max_side: int = AFTER_MAX_SIDE,
) -> bytes:
    """A PNG of the de-identified image with the redaction boxes outlined in red.

    `boxes` are (x, y, width, height) in the pixels of `source_size` (width, height); by default
    in the pixels of `image` itself. For a slide, pass its thumbnail and the level-0 size.
    """

    rgb = to_rgb8(image)
    small, factor = _shrink(rgb, max_side)
    if source_size is not None:
        factor = small.shape[1] / max(source_size[0], 1)
    for box in boxes:
        x, y, w, h = box.as_list() if isinstance(box, Box) else list(box)
        top_left = (int(x * factor), int(y * factor))
        bottom_right = (max(top_left[0] + 1, int((x + w) * factor)), max(top_left[1] + 1, int((y + h) * factor)))
        cv2.rectangle(small, top_left, bottom_right, BOX_COLOUR_BGR, 1 if max(small.shape[:2]) < 200 else 2)
    return _png(small)


def first_frame(ds: Any) -> np.ndarray | None:
    """Frame 0 of a pydicom Dataset's pixels, or None when it has none or cannot be decoded."""
    if "PixelData" not in ds:
        return None
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return np.asarray(pixel_array(ds, index=0 if frames > 1 else None))
    except Exception:  # noqa: BLE001 - a thumbnail is optional: any decode failure means none
        return None


# ---------------------------------------------------------------------------------------------
# Summary from audit records
# ---------------------------------------------------------------------------------------------


def _get(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def summary_from_audit(records: Iterable[Any], entries: Iterable[QaEntry] = ()) -> RunSummary:
    """Run totals from audit records (AuditRecord objects or their JSON dicts); stage times from entries."""
    by_kind: dict[str, int] = {}
    errors: dict[str, int] = {}
    actions: dict[str, int] = {}
    inputs = ok = dead = outputs = held = 0
    for record in records:
        inputs += 1
        kind = str(_get(record, "kind", "unknown"))
        by_kind[kind] = by_kind.get(kind, 0) + 1
        if _get(record, "status") == "ok":
            ok += 1
        elif _get(record, "status") == "needs_review":
            held += 1  # waiting under review/ (deid/review/): neither published nor dead-lettered
        else:
            dead += 1
            error = str(_get(record, "error_kind") or "unknown")
            errors[error] = errors.get(error, 0) + 1
        outputs += len(_get(record, "outputs", ()) or ())
        for name, value in dict(_get(record, "actions", {}) or {}).items():
            actions[name] = actions.get(name, 0) + int(value)
    stages: dict[str, float] = {}
    for entry in entries:
        for name, seconds in entry.stage_seconds.items():
            stages[name] = stages.get(name, 0.0) + float(seconds)
    return RunSummary(
        inputs=inputs,
        ok=ok,
        dead_letter=dead,
        needs_review=held,
        leaks=errors.get("leak", 0),
        outputs=outputs,
        by_kind=dict(sorted(by_kind.items())),
        error_kinds=dict(sorted(errors.items())),
        actions=dict(sorted(actions.items())),
        stage_seconds=stages,
    )


def _reasons(dead_letters: Iterable[Any]) -> dict[tuple[str, str], str]:
    """(input_sha256, error_kind) -> the dead-letter message (the first one of that pair)."""
    reasons: dict[tuple[str, str], str] = {}
    for record in dead_letters:
        key = (str(_get(record, "input_sha256", "")), str(_get(record, "error_kind") or ""))
        reasons.setdefault(key, str(_get(record, "message", "") or ""))
    return reasons


def _rows(records: Iterable[Any], entries: Iterable[QaEntry], dead_letters: Iterable[Any] = ()) -> list[_Row]:
    by_sha = {e.input_sha256: e for e in entries}
    reasons = _reasons(dead_letters)
    rows = []
    for record in records:
        sha = str(_get(record, "input_sha256", ""))
        entry = by_sha.pop(sha, None) or QaEntry(sha, str(_get(record, "kind", "unknown")))
        error_kind = str(_get(record, "error_kind") or "")
        rows.append(
            _Row(
                entry=entry,
                status=str(_get(record, "status", "")),
                error_kind=error_kind,
                actions=dict(_get(record, "actions", {}) or {}),
                outputs=len(_get(record, "outputs", ()) or ()),
                reason=reasons.get((sha, error_kind), ""),
            )
        )
    rows += [_Row(e, "unknown", "", {}, 0) for e in by_sha.values()]
    return sorted(rows, key=lambda r: (r.entry.kind, r.status != "ok", r.entry.input_sha256))


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1b1f24;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.note{color:#57606a;font-size:13px;max-width:900px}
dl.summary{display:grid;grid-template-columns:repeat(6,auto);gap:4px 18px;justify-content:start}
dl.summary dt{color:#57606a;font-size:12px} dl.summary dd{margin:0;font-size:20px;font-weight:600}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #d0d7de;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f0f3f6}
td.pair{white-space:nowrap}
figure{display:inline-block;white-space:normal;margin:0 8px 0 0;text-align:center}
figure img{width:160px;height:auto;border:1px solid #d0d7de;background:#eee}
figure img.before{image-rendering:auto;filter:blur(1px)}
figcaption{font-size:11px;color:#57606a}
.ok{color:#1a7f37;font-weight:600} .dead_letter{color:#cf222e;font-weight:600}
.counts{margin:0;padding-left:16px}
td.reason{max-width:420px;white-space:normal}
.error-kind-tag{display:inline-block;font-family:monospace;background:#ffebe9;color:#cf222e;
border:1px solid #ffcecb;border-radius:4px;padding:0 4px;margin-bottom:4px}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes | None, css: str, alt: str) -> str:
    if not png:
        return f'<span class="noimg">no {css} image</span>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{css}" alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _chart(stages: Mapping[str, float]) -> str:
    if not stages:
        return '<p class="note" id="stage-chart-empty">No per-stage timings were recorded for this run.</p>'
    items = sorted(stages.items(), key=lambda kv: -kv[1])
    longest = max(v for _, v in items) or 1.0
    bar_h, gap, label_w, bar_w = 22, 6, 170, 420
    height = len(items) * (bar_h + gap) + gap
    parts = [
        f'<svg id="stage-chart" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" '
        f'height="{height}" role="img" aria-label="Time per stage in seconds">'
    ]
    for index, (name, seconds) in enumerate(items):
        y = gap + index * (bar_h + gap)
        width = max(1.0, bar_w * seconds / longest)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end" font-size="12">{_esc(name)}</text>'
            f'<rect class="stage-bar" data-stage="{_esc(name)}" data-seconds="{seconds:.3f}" x="{label_w}" y="{y}" '
            f'width="{width:.1f}" height="{bar_h}" fill="#0969da"></rect>'
            f'<text x="{label_w + width + 6:.1f}" y="{y + bar_h * 0.7:.1f}" font-size="12">{seconds:.2f} s</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _counts(actions: Mapping[str, int]) -> str:
    shown = [(k, v) for k, v in sorted(actions.items()) if v]
    if not shown:
        return "&ndash;"
    return '<ul class="counts">' + "".join(f"<li>{_esc(k)}: {int(v)}</li>" for k, v in shown) + "</ul>"


def _summary_block(summary: RunSummary) -> str:
    cells = [
        ("sum-inputs", "inputs", summary.inputs),
        ("sum-ok", "de-identified", summary.ok),
        ("sum-dead-letter", "dead letters", summary.dead_letter),
        ("sum-needs-review", "held for review", summary.needs_review),
        ("sum-leaks", "quarantined (leak)", summary.leaks),
        ("sum-outputs", "output files", summary.outputs),
    ]
    head = "".join(f"<dt>{_esc(label)}</dt>" for _, label, _ in cells)
    values = "".join(f'<dd id="{cid}" data-value="{int(v)}">{int(v)}</dd>' for cid, _, v in cells)
    kinds = ", ".join(f"{_esc(k)}: {v}" for k, v in summary.by_kind.items()) or "none"
    errors = ", ".join(
        f'<span class="error-kind" data-kind="{_esc(k)}" data-value="{v}">{_esc(k)}: {v}</span>'
        for k, v in summary.error_kinds.items()
    ) or "none"
    return (
        f'<dl class="summary">{head}{values}</dl>'
        f'<p class="note">By kind: {kinds}. Dead letters by error kind: {errors}.</p>'
        f'<h2>Actions, per action over the de-identified inputs</h2>{_counts(summary.actions)}'
    )


def _pair(row: _Row) -> str:
    """The before/after cell: the thumbnails, or for a dead letter its error kind and reason."""
    entry = row.entry
    if row.status == "dead_letter":
        reason = _esc(row.reason) if row.reason else "no dead-letter message was recorded"
        return (
            f'<td class="reason"><span class="error-kind-tag">{_esc(row.error_kind or "unknown")}</span><br>'
            f'<span class="dead-letter-reason">not de-identified: {reason}</span></td>'
        )
    boxes = f"{entry.boxes} redaction box(es) drawn in red" if entry.boxes else "no redaction box"
    return (
        '<td class="pair"><figure>' + _img(entry.before_png, "before", "input, blurred")
        + "<figcaption>before (blurred)</figcaption></figure><figure>" + _img(entry.after_png, "after", "output")
        + f"<figcaption>after: {boxes}</figcaption></figure></td>"
    )


def build_report(
    entries: Sequence[QaEntry],
    summary: RunSummary,
    records: Iterable[Any] | None = None,
    dead_letters: Iterable[Any] = (),
) -> str:
    """The HTML page. `records`: the audit records (rows for inputs without a QaEntry, statuses);
    `dead_letters`: the DeadLetterRecords (or their JSON dicts), whose messages say why."""
    rows = _rows(records if records is not None else [], entries, dead_letters)
    body = []
    for row in rows:
        entry = row.entry
        disposition = (
            f"label: {_esc(entry.label or 'n/a')}<br>macro: {_esc(entry.macro or 'n/a')}"
            if entry.kind == "wsi"
            else "n/a"
        )
        tiles = (
            f"passthrough: {entry.tiles_passthrough}<br>re-encoded: {entry.tiles_reencoded}"
            if entry.kind == "wsi"
            else "n/a"
        )
        status = _esc(row.status) + (f" ({_esc(row.error_kind)})" if row.error_kind else "")
        body.append(
            f'<tr class="input" data-sha="{_esc(entry.input_sha256[:12])}" data-status="{_esc(row.status)}">'
            f"<td><code>{_esc(entry.input_sha256[:12])}</code><br>{_esc(entry.kind)}</td>"
            f'<td class="{_esc(row.status)}">{status}<br>{row.outputs} output(s)</td>'
            + _pair(row)
            + f"<td>{disposition}</td><td>{tiles}</td><td>{_counts(row.actions)}</td></tr>"
        )
    rows_html = "".join(body) or '<tr><td colspan="6">No inputs.</td></tr>'
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>De-identification QA report</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>De-identification QA report</h1>"
        '<p class="note" id="before-note">Before thumbnails are made in memory from each input, '
        f"downsampled to at most {BEFORE_MAX_SIDE} pixels and blurred so that no text in them is "
        "readable; they are not stored anywhere else. After thumbnails show the de-identified output "
        "with redaction boxes outlined in red. Inputs are named by the first 12 hex digits of their "
        "sha256, never by file name.</p>"
        f"<h2>Run summary</h2>{_summary_block(summary)}"
        f"<h2>Time per stage</h2>{_chart(summary.stage_seconds)}"
        "<h2>Inputs</h2><table id=\"inputs\"><thead><tr><th>input</th><th>status</th>"
        "<th>before / after, or why not</th><th>label / macro</th><th>tiles</th><th>actions</th></tr></thead>"
        f"<tbody>{rows_html}</tbody></table></body></html>\n"
    )
