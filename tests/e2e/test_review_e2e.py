"""Human review end to end: a run holds uncertain inputs under OUTPUT/review/, the review page shows
them in headless Chromium, and `python -m pipeline.review` approves, redacts and rejects them, on a
local and a gs:// output; the keyed sample of clean outputs; a slide held whole."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from deid.keys import DeidKey
from deid.review.decision import sampled
from deid.review.held import HeldInput
from pipeline.main import main
from pipeline.review import main as review_main
from pipeline.verify import main as verify_main
from tests.support.env import BEAM_TEST_ARGS
from tests.support.qa_pages import CHROMIUM
from tests.support.review_inputs import Drawn, review_page_probe, write_slide, write_us

KEY = b"review-test-key-0123456789abcdef"


@dataclass(frozen=True)
class HeldRun:
    root: Path
    inputs: Path
    output: Path
    by_name: dict[str, str]  # input name -> sha256
    drawn: dict[str, Drawn]


def _records(output: Path, folder: str = "audit") -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted((output / folder).glob("*.jsonl")) for line in f.read_text().splitlines()]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def held_run(tmp_path_factory: pytest.TempPathFactory) -> HeldRun:
    root = tmp_path_factory.mktemp("review")
    inputs = root / "in"
    drawn = {
        "clear.dcm": write_us(inputs / "clear.dcm", 1, 1),
        "faint.dcm": write_us(inputs / "faint.dcm", 1, 2, faint=True),
        "partial.dcm": write_us(inputs / "partial.dcm", 1, 3, partial=True),
        "faint2.dcm": write_us(inputs / "faint2.dcm", 1, 4, strong=False, faint=True),
    }
    (root / "deid.key").write_bytes(KEY)
    output = root / "out"
    argv = [f"--input={inputs}", f"--output={output}", "--redact_text=detect", f"--deid_key_file={root / 'deid.key'}"]
    assert main([*argv, *BEAM_TEST_ARGS]) == 0
    return HeldRun(root, inputs, output, {name: _sha(inputs / name) for name in drawn}, drawn)


def _copy(run: HeldRun, tmp_path: Path) -> Path:
    output = tmp_path / "out"
    shutil.copytree(run.output, output)
    return output


def _held(output: Path, sha: str) -> HeldInput:
    return HeldInput.from_json((output / "review" / sha / "review.json").read_text())


def test_confident_text_is_published_and_uncertain_text_is_held(held_run: HeldRun) -> None:
    records = {r["input_sha256"]: r for r in _records(held_run.output)}
    clear = records[held_run.by_name["clear.dcm"]]
    assert clear["status"] == "ok" and clear["outputs"][0].startswith("dicom/")
    assert clear["actions"]["text_candidates_pending"] == 0
    assert sum(v for k, v in clear["actions"].items() if k.startswith("text_score_")) >= 1
    for name in ("faint.dcm", "partial.dcm", "faint2.dcm"):
        sha = held_run.by_name[name]
        record = records[sha]
        assert record["status"] == "needs_review", name
        assert record["details"]["review"] == "uncertain" and record["details"]["candidates_pending"] >= 1
        (held_path,) = record["outputs"]
        assert held_path.startswith(f"review/{sha}/dicom/")
        held = _held(held_run.output, sha)
        assert all(c.score < 0.8 for c in held.pending)
        manifest = (held_run.output / "review" / sha / "review.json").read_text()
        assert "ZQX" not in manifest.upper() and str(held_run.inputs) not in manifest
        pixels = pydicom.dcmread(held_run.output / held_path).pixel_array
        drawn = held_run.drawn[name]
        if drawn.strong is not None:  # confident boxes already applied in the held output
            assert (pixels[drawn.strong] == 0).mean() >= 0.95
        uncertain = drawn.faint if drawn.faint is not None else drawn.partial
        assert uncertain is not None and (pixels[uncertain] > 40).mean() >= 0.5  # left for the reviewer
    assert not list((held_run.output / "dicom").rglob("*.dcm"))[1:], "only the clear input is published"


@pytest.mark.needs_tool
def test_review_page_in_headless_chromium(held_run: HeldRun, tmp_path: Path) -> None:
    if not CHROMIUM:
        pytest.skip("chromium is not installed")
    page = tmp_path / "index.html"
    shutil.copy(held_run.output / "review" / "index.html", page)
    result = review_page_probe(page, tmp_path)
    sections = {s["sha"]: s for s in result["sections"]}  # type: ignore[union-attr]
    held = {held_run.by_name[n] for n in ("faint.dcm", "partial.dcm", "faint2.dcm")}
    assert set(sections) == held
    assert result["summary"]["held"] == "3"  # type: ignore[index]
    for sha, section in sections.items():
        manifest = _held(held_run.output, sha)
        assert section["images"] and all(ok and width > 0 for ok, width, _ in section["images"])
        shown = {int(number): status for number, status, _, _ in section["boxes"]}
        assert {c.number for c in manifest.pending} <= {n for n, s in shown.items() if "pending" in s}
        assert all(str(number) == label and width > 0 for number, _, label, width in section["boxes"])
        assert section["rows"] == len(manifest.candidates)
        assert f"--approve {sha}" in section["commands"] and f"--reject {sha}" in section["commands"]
    assert "ZQX" not in page.read_text().split("data:image")[0].upper()


def _review(output: Path | str, *args: str) -> int:
    return review_main(["--output", str(output), "--reviewer", "tester", *args])


def test_approve_redact_and_reject_each_end_in_one_outcome(held_run: HeldRun, tmp_path: Path) -> None:
    output = _copy(held_run, tmp_path)
    faint, partial, rejected = (held_run.by_name[n] for n in ("faint.dcm", "partial.dcm", "faint2.dcm"))
    inputs = str(held_run.inputs)
    assert _review(output, "--approve", faint) == 2  # --input is required to check again
    assert _review(output, "--input", inputs, "--approve", faint) == 0
    # Redact the pending candidates, then approve: the published pixels there are black.
    box = _held(output, partial).pending[0].box
    assert _review(output, "--redact", partial[:16], "--box", ",".join(map(str, box.as_list())), "--frame", "0") == 0
    assert not _held(output, partial).pending
    assert _review(output, "--input", inputs, "--approve", partial) == 0
    assert _review(output, "--reject", rejected, "--reason", "not fit: test") == 0

    audits = _records(output)
    final = {r["input_sha256"]: r for r in audits if r.get("reviewed")}
    assert final[faint]["status"] == "ok" and final[faint]["reviewed"] == "approved"
    assert final[partial]["status"] == "ok"
    assert final[rejected] == {**final[rejected], "status": "dead_letter", "error_kind": "rejected_in_review"}
    for sha in (faint, partial):
        (relpath,) = final[sha]["outputs"]
        assert (output / relpath).is_file() and relpath.startswith("dicom/")
    published = pydicom.dcmread(output / final[partial]["outputs"][0]).pixel_array
    assert not published[box.y : box.y + box.height, box.x : box.x + box.width].any()
    assert len(list((output / "dicom").rglob("*.dcm"))) == 3  # clear + two approved, nothing else
    (dead,) = [r for r in _records(output, "dead_letter") if r["error_kind"] == "rejected_in_review"]
    assert dead["input_sha256"] == rejected and "not fit" not in dead["message"]
    # The run's needs_review records stay: records are only ever added.
    assert sum(r["status"] == "needs_review" for r in audits) == 3
    decisions = [json.loads(line) for line in (output / "review" / "decisions.jsonl").read_text().splitlines()]
    assert [d["what"] for d in decisions] == ["approve", "redact", "approve", "reject"]
    assert all(d["who"] == "tester" and d["when"] for d in decisions) and decisions[-1]["reason"] == "not fit: test"
    assert not [p for p in (output / "review").iterdir() if p.is_dir()]
    assert "0 input(s) held" in (output / "review" / "index.html").read_text()
    assert verify_main(["--input", inputs, "--output", str(output)]) == 0


def test_review_command_on_a_gs_output(held_run: HeldRun, cloud: Any) -> None:
    from apache_beam.io.filesystems import FileSystems

    bucket = "review-" + held_run.by_name["faint.dcm"][:8]
    cloud.create_bucket(bucket)
    base = f"gs://{bucket}/out"
    for path in held_run.output.rglob("*"):
        if path.is_file():
            cloud.upload(f"{base}/{path.relative_to(held_run.output).as_posix()}", path.read_bytes())
    faint, rejected = held_run.by_name["faint.dcm"], held_run.by_name["faint2.dcm"]
    assert _review(base, "--input", str(held_run.inputs), "--approve", faint) == 0
    assert _review(base, "--reject", rejected, "--reason", "test") == 0
    objects = cloud.list(f"{base}/")
    (approved,) = [json.loads(line) for k, v in objects.items() if "/audit/audit-review-" in k
                   for line in v.decode().splitlines() if json.loads(line)["input_sha256"] == faint]
    assert approved["status"] == "ok" and f"{base}/{approved['outputs'][0]}" in objects
    assert not [k for k in objects if f"/review/{faint}/" in k or f"/review/{rejected}/" in k]
    assert any("/dead_letter/dead_letter-review-" in k for k in objects)
    assert len(objects[f"{base}/review/decisions.jsonl"].decode().splitlines()) == 2
    assert FileSystems.exists(f"{base}/review/index.html")


def test_keyed_sample_of_clean_outputs_and_a_slide_held_whole(tmp_path: Path) -> None:
    inputs, output = tmp_path / "in", tmp_path / "out"
    for number in range(1, 7):
        write_us(inputs / f"clear{number}.dcm", 2, number)
    write_slide(inputs / "slide.tiff", partial=True)
    key_file = tmp_path / "deid.key"
    key_file.write_bytes(KEY)
    argv = [f"--input={inputs}", f"--output={output}", "--redact_text=detect", "--review_sample_rate=0.5",
            f"--deid_key_file={key_file}", *BEAM_TEST_ARGS]
    assert main(argv) == 0
    records = {r["input_sha256"]: r for r in _records(output)}
    key = DeidKey(KEY)
    for number in range(1, 7):
        sha = _sha(inputs / f"clear{number}.dcm")
        expected = "needs_review" if sampled(key, sha, 0.5) else "ok"
        assert records[sha]["status"] == expected
        if expected == "needs_review":
            assert records[sha]["details"]["review"] == "sampled"
    assert {r["details"].get("review") for r in records.values() if r["status"] == "needs_review"} >= {"sampled"}
    slide = records[_sha(inputs / "slide.tiff")]
    assert slide["status"] == "needs_review" and slide["details"]["review"] == "uncertain"
    (held_pyramid,) = slide["outputs"]
    assert held_pyramid.startswith(f"review/{slide['input_sha256']}/wsi/") and (output / held_pyramid).is_file()
    assert not list((output / "wsi").glob("*")) if (output / "wsi").exists() else True
    assert _review(output, "--redact", slide["input_sha256"], "--box", "0,0,10,10") == 2  # slides: re-run instead
    assert _review(output, "--input", str(inputs), "--approve", slide["input_sha256"]) == 0
    published = output / held_pyramid.split("/", 2)[2]
    assert published.is_file() and published.read_bytes() == _held_bytes(output, held_pyramid, published)


def _held_bytes(output: Path, held: str, published: Path) -> bytes:
    """The held pyramid is gone after approval; its bytes are the published file's (one copy)."""
    assert not (output / held).exists()
    data = published.read_bytes()
    assert np.frombuffer(data[:4], np.uint8).tolist() in ([73, 73, 42, 0], [73, 73, 43, 0])
    return data


def _unused(_: io.BytesIO) -> None:  # pragma: no cover - keeps the io import for readers of payloads
    return None
