"""`OUTPUT/review/index.html`: one self-contained page listing every held input.

Per held input: its de-identified image(s) (the previews, PNG embedded as data: URIs) with every
candidate box drawn over it and numbered (pending ones dashed red, redacted ones green, covered ones
grey), a table of the candidates (number, frame or level, box, score, kind, status), and the
decision commands to copy. No script, font, stylesheet or image comes from anywhere else. Inputs are
named by their sha256 (the commands need all of it), never by file name; OUTPUT and INPUT stand for
the locations, which the page does not know.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

from deid.review.held import HeldInput, Preview, ReviewCandidate

STATUS_COLOURS = {"pending": "#cf222e", "redacted": "#1a7f37", "covered": "#8c959f"}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1b1f24;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:0 0 8px}
.note{color:#57606a;font-size:13px;max-width:960px}
section.held{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin:16px 0}
.frame{position:relative;display:inline-block;margin:0 12px 12px 0;vertical-align:top}
.frame img{display:block;border:1px solid #d0d7de;background:#000}
.frame svg{position:absolute;left:1px;top:1px;overflow:visible}
.frame svg text{font:bold 14px sans-serif;paint-order:stroke;stroke:#fff;stroke-width:3px}
.caption{font-size:11px;color:#57606a}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left} th{background:#f0f3f6}
td.pending{color:#cf222e;font-weight:600} td.redacted{color:#1a7f37} td.covered{color:#57606a}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:8px;font-size:12px;white-space:pre-wrap}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _where(candidate: ReviewCandidate, kind: str) -> str:
    if kind == "wsi":
        return f"level {candidate.level or 0}"
    return f"frame {candidate.frame or 0}"


def _overlay(preview: Preview, candidates: Sequence[ReviewCandidate]) -> str:
    parts = []
    ox, oy = preview.origin
    for candidate in candidates:
        if not preview.shows(candidate):
            continue
        box = candidate.box
        x, y = (box.x - ox) * preview.scale, (box.y - oy) * preview.scale
        w, h = max(2.0, box.width * preview.scale), max(2.0, box.height * preview.scale)
        colour = STATUS_COLOURS.get(candidate.status, "#0969da")
        dash = ' stroke-dasharray="6 3"' if candidate.status == "pending" else ""
        parts.append(
            f'<g class="candidate {_esc(candidate.status)}" data-number="{candidate.number}">'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="none" '
            f'stroke="{colour}" stroke-width="2"{dash}></rect>'
            f'<text x="{x + 2:.1f}" y="{max(12.0, y - 3):.1f}" fill="{colour}">{candidate.number}</text></g>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{preview.width}" height="{preview.height}" '
        f'viewBox="0 0 {preview.width} {preview.height}">' + "".join(parts) + "</svg>"
    )


def _figure(held: HeldInput, preview: Preview, png: bytes | None) -> str:
    if not png:
        return f'<p class="note">preview {_esc(preview.file)} is missing</p>'
    data = base64.b64encode(png).decode("ascii")
    where = f"level {preview.level or 0}" if held.kind == "wsi" else f"frame {preview.frame or 0}"
    if preview.origin != (0, 0) or (held.kind == "wsi" and preview.scale >= 0.999):
        where += f", from x {preview.origin[0]}, y {preview.origin[1]}"
    return (
        f'<div class="frame"><img alt="held output, {_esc(where)}" width="{preview.width}" '
        f'height="{preview.height}" src="data:image/png;base64,{data}">{_overlay(preview, held.candidates)}'
        f'<div class="caption">{_esc(where)}, {preview.scale:.4g} preview px per image px</div></div>'
    )


def _commands(held: HeldInput) -> str:
    sha = held.input_sha256
    base = "python -m pipeline.review --output OUTPUT"
    lines = [f"{base} --input INPUT --approve {sha}"]
    for candidate in held.pending:
        box = ",".join(str(v) for v in candidate.box.as_list())
        if held.kind == "wsi":
            lines.append(
                f"# candidate {candidate.number}: re-run the slide with --redact_regions '{{\"{sha}\": [[{box}]]}}'"
            )
        else:
            lines.append(
                f"{base} --redact {sha} --box {box} --frame {candidate.frame or 0}   # candidate {candidate.number}"
            )
    lines.append(f'{base} --reject {sha} --reason "why (no patient details)"')
    return '<pre class="commands">' + _esc("\n".join(lines)) + "</pre>"


def _table(held: HeldInput) -> str:
    if not held.candidates:
        return '<p class="note">No text candidate: held as part of the sample of clean outputs.</p>'
    rows = "".join(
        f'<tr class="row" data-number="{c.number}"><td>{c.number}</td><td>{_esc(_where(c, held.kind))}</td>'
        f"<td>{_esc(','.join(str(v) for v in c.box.as_list()))}</td><td>{c.score:.2f}</td>"
        f'<td>{_esc(c.kind)}</td><td class="{_esc(c.status)}">{_esc(c.status)}</td></tr>'
        for c in held.candidates
    )
    return (
        '<table class="candidates"><thead><tr><th>#</th><th>where</th><th>box x,y,w,h</th><th>score</th>'
        f"<th>kind</th><th>status</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _section(held: HeldInput, pngs: Mapping[str, bytes]) -> str:
    pending = len(held.pending)
    title = (
        f"<code>{_esc(held.input_sha256[:12])}</code> {_esc(held.kind)}: held ({_esc(held.reason)}), "
        f"{pending} pending of {len(held.candidates)} candidate(s), threshold {held.threshold:.2f}"
    )
    figures = "".join(_figure(held, p, pngs.get(p.file)) for p in held.previews)
    return (
        f'<section class="held" data-sha="{_esc(held.input_sha256)}" data-reason="{_esc(held.reason)}" '
        f'data-pending="{pending}"><h2>{title}</h2><div class="previews">{figures}</div>'
        f"{_table(held)}{_commands(held)}</section>"
    )


def build_review_page(items: Sequence[tuple[HeldInput, Mapping[str, bytes]]]) -> str:
    """The page for these held inputs and their preview PNGs (by file name)."""
    ordered = sorted(items, key=lambda item: (item[0].reason != "uncertain", item[0].kind, item[0].input_sha256))
    sections = "".join(_section(held, pngs) for held, pngs in ordered)
    pending = sum(len(held.pending) for held, _ in ordered)
    sampled = sum(held.reason == "sampled" for held, _ in ordered)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>De-identification review</title><style>{_CSS}</style></head><body>"
        "<h1>De-identification review</h1>"
        f'<p class="note" id="review-summary" data-held="{len(ordered)}" data-pending="{pending}" '
        f'data-sampled="{sampled}">{len(ordered)} input(s) held: {pending} pending candidate(s); '
        f"{sampled} held as a sample of clean outputs.</p>"
        '<p class="note">Each image is the de-identified output as approving would publish it: boxes '
        "at or above the threshold are already redacted (green), dashed red boxes are pending, grey "
        "ones are covered by other redactions. Pending text is readable here: keep this page as private "
        "as the inputs. Approve publishes the output after checking it again for the input's "
        "identifying values; redact adds a box and re-renders; reject dead-letters the input. A reason "
        "must not quote what the image shows.</p>"
        f"{sections or '<p class=note>Nothing is held.</p>'}</body></html>\n"
    )
