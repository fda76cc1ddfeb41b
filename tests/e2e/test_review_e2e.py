"""Human review end to end: a run holds uncertain inputs under OUTPUT/review/, the review page shows
them in headless Chromium, and `python -m pipeline.review` approves, redacts and rejects them, on a
local and a gs:// output; the keyed sample of clean outputs; a slide held whole."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    return hashlib.sha256(path.read_bytes()).hexdigest()


CLEAR = [f"clear{n}.dcm" for n in range(1, 6)]
SAMPLE_RATE = 0.5


@pytest.fixture(scope="module")
def held_run(tmp_path_factory: pytest.TempPathFactory) -> HeldRun:
    """One run: five US frames with clear text only (a keyed half of them sampled for review),
    three with faint or partial text (held uncertain), and a slide with two characters alone."""
    root = tmp_path_factory.mktemp("review")
    inputs = root / "in"
    drawn = {name: write_us(inputs / name, 1, number) for number, name in enumerate(CLEAR, start=10)}
    drawn["faint.dcm"] = write_us(inputs / "faint.dcm", 1, 2, faint=True)
    drawn["partial.dcm"] = write_us(inputs / "partial.dcm", 1, 3, partial=True)
    drawn["faint2.dcm"] = write_us(inputs / "faint2.dcm", 1, 4, strong=False, faint=True)
    write_slide(inputs / "slide.tiff", partial=True)
    (root / "deid.key").write_bytes(KEY)
    output = root / "out"
    argv = [
        f"--input={inputs}",
        f"--output={output}",
        "--redact_text=detect",
        f"--deid_key_file={root / 'deid.key'}",
        f"--review_sample_rate={SAMPLE_RATE}",
    ]
    assert main([*argv, *BEAM_TEST_ARGS]) == 0
    names = [*drawn, "slide.tiff"]
    return HeldRun(root, inputs, output, {name: _sha(inputs / name) for name in names}, drawn)


def _copy(run: HeldRun, tmp_path: Path) -> Path:
    output = tmp_path / "out"
    shutil.copytree(run.output, output)
    return output


def _held(output: Path, sha: str) -> HeldInput:
    return HeldInput.from_json((output / "review" / sha / "review.json").read_text())


def test_confident_text_is_published_and_uncertain_text_is_held(held_run: HeldRun) -> None:
    records = {r["input_sha256"]: r for r in _records(held_run.output)}
    key = DeidKey(KEY)
    outcomes = []
    for name in CLEAR:  # published, unless in the keyed sample
        sha = held_run.by_name[name]
        record = records[sha]
        assert record["actions"]["text_candidates_pending"] == 0
        assert sum(v for k, v in record["actions"].items() if k.startswith("text_score_")) >= 1
        if sampled(key, sha, SAMPLE_RATE):
            assert record["status"] == "needs_review" and record["details"]["review"] == "sampled"
        else:
            assert record["status"] == "ok" and record["outputs"][0].startswith("dicom/")
        outcomes.append(record["status"])
    assert set(outcomes) == {"ok", "needs_review"}  # this key samples some of the five, not all
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
    slide = records[held_run.by_name["slide.tiff"]]  # held whole, nothing under wsi/
    assert slide["status"] == "needs_review" and slide["details"]["review"] == "uncertain"
    (pyramid,) = slide["outputs"]
    assert pyramid.startswith(f"review/{slide['input_sha256']}/wsi/") and (held_run.output / pyramid).is_file()
    assert not (held_run.output / "wsi").exists() or not list((held_run.output / "wsi").iterdir())


@pytest.mark.needs_tool
def test_review_page_in_headless_chromium(held_run: HeldRun, tmp_path: Path) -> None:
    if not CHROMIUM:
        pytest.skip("chromium is not installed")
    page = tmp_path / "index.html"
    shutil.copy(held_run.output / "review" / "index.html", page)
    result = review_page_probe(page, tmp_path)
    sections = {s["sha"]: s for s in result["sections"]}  # type: ignore[union-attr]
    held = {r["input_sha256"] for r in _records(held_run.output) if r["status"] == "needs_review"}
    assert set(sections) == held and result["summary"]["held"] == str(len(held))  # type: ignore[index]
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
    assert _review(output, "--reject", rejected, "--reason", "blurry frame: test") == 0

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
    published_before = sum(r["status"] == "ok" for r in _records(held_run.output))
    assert len(list((output / "dicom").rglob("*.dcm"))) == published_before + 2  # two approved, nothing else
    (dead,) = [r for r in _records(output, "dead_letter") if r["error_kind"] == "rejected_in_review"]
    assert dead["input_sha256"] == rejected and "blurry" not in dead["message"]
    # The run's needs_review records stay: records are only ever added.
    assert sum(r["status"] == "needs_review" for r in audits) == sum(
        r["status"] == "needs_review" for r in _records(held_run.output)
    )
    decisions = [json.loads(line) for line in (output / "review" / "decisions.jsonl").read_text().splitlines()]
    assert [d["what"] for d in decisions] == ["approve", "redact", "approve", "reject"]
    assert (
        all(d["who"] == "tester" and d["when"] for d in decisions) and decisions[-1]["reason"] == "blurry frame: test"
    )
    for sha in (faint, partial, rejected):
        assert not (output / "review" / sha).exists()
    page = (output / "review" / "index.html").read_text()
    assert faint not in page and rejected not in page
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
    (approved,) = [
        json.loads(line)
        for k, v in objects.items()
        if "/audit/audit-review-" in k
        for line in v.decode().splitlines()
        if json.loads(line)["input_sha256"] == faint
    ]
    assert approved["status"] == "ok" and f"{base}/{approved['outputs'][0]}" in objects
    assert not [k for k in objects if f"/review/{faint}/" in k or f"/review/{rejected}/" in k]
    assert any("/dead_letter/dead_letter-review-" in k for k in objects)
    assert len(objects[f"{base}/review/decisions.jsonl"].decode().splitlines()) == 2
    assert FileSystems.exists(f"{base}/review/index.html")


def test_a_held_slide_is_approved_whole(held_run: HeldRun, tmp_path: Path) -> None:
    output = _copy(held_run, tmp_path)
    sha = held_run.by_name["slide.tiff"]
    (held_pyramid,) = [r["outputs"][0] for r in _records(output) if r["input_sha256"] == sha]
    held_bytes = (output / held_pyramid).read_bytes()
    assert _review(output, "--redact", sha, "--box", "0,0,10,10") == 2  # a slide is re-run instead
    assert _review(output, "--input", str(held_run.inputs), "--approve", sha) == 0
    published = output / held_pyramid.split("/", 2)[2]
    assert published.read_bytes() == held_bytes and not (output / held_pyramid).exists()
    (record,) = [r for r in _records(output) if r["input_sha256"] == sha and r.get("reviewed")]
    assert record["status"] == "ok" and record["outputs"] == [held_pyramid.split("/", 2)[2]]
