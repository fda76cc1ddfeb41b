"""End to end: `pipeline.main.main([...])` on the demo's synthetic inputs, on an in-process runner."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import openslide
import pydicom
import pytest

from pipeline.main import main
from tests.support.env import BEAM_TEST_ARGS, REPO_ROOT

# Fake PHI planted by scripts/make_demo_data.py, and the input names (which carry PHI too).
PHI = [
    "DOE^JANE",
    "DOE_JANE",
    "ROE^RICHARD",
    "MRN-0042-77",
    "MRN-0099-13",
    "HOUSE^GREGORY",
    "TECH^TINA",
    "General Hospital",
    "GENERAL HOSPITAL",
    "SN-123456",
    "CT-ROOM-3",
    "tech.tina",
    "SS1234",
    "19610412",
    "19750830",
    "p0_s0_1",
    "us_with_burned_in_text",
    "internal note",
]


def _load_demo_module():
    spec = importlib.util.spec_from_file_location("make_demo_data", REPO_ROOT / "scripts" / "make_demo_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    _load_demo_module().main(str(root))
    return root


def _run(demo: Path, output: Path, *extra: str) -> int:
    return main(
        [
            "--input",
            str(demo / "input"),
            "--output",
            str(output),
            "--deid_key_file",
            str(demo / "demo.key"),
            *extra,
            *BEAM_TEST_ARGS,
        ]
    )


def _jsonl(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts}


def test_demo_run_end_to_end(demo_inputs: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    linkage = tmp_path / "linkage"
    assert _run(demo_inputs, output, "--linkage_output", str(linkage)) == 0
    captured = capfd.readouterr()

    inputs = {p: _sha(p) for p in (demo_inputs / "input").rglob("*") if p.is_file()}
    audit = _jsonl(output / "audit")
    dead = _jsonl(output / "dead_letter")
    by_sha = {r["input_sha256"]: r for r in audit}
    # Every input ends as exactly one record: output or dead letter.
    assert len(audit) == len(inputs)
    assert set(by_sha) == set(inputs.values())

    def record(name: str) -> dict:
        (path,) = [p for p in inputs if p.name == name]
        return by_sha[inputs[path]]

    assert record("truncated.dcm")["error_kind"] == "invalid_input"
    assert record("empty.dcm")["error_kind"] == "invalid_input"
    assert record("notes.txt")["error_kind"] == "unsupported_format"
    assert record("us_with_burned_in_text.dcm")["error_kind"] == "burned_in_annotation"
    assert {d["error_kind"] for d in dead} == {"invalid_input", "unsupported_format", "burned_in_annotation"}
    assert all(d["message"] for d in dead)

    # DICOM outputs: contract layout with new UIDs, consistent per study.
    studies: dict[str, set[str]] = {}
    ct_records = [r for r in audit if r["kind"] == "dicom" and r["status"] == "ok"]
    assert len(ct_records) == 12
    for rec in ct_records:
        (rel,) = rec["outputs"]
        assert re.fullmatch(r"dicom/2\.25\.\d+/2\.25\.\d+/2\.25\.\d+\.dcm", rel)
        ds = pydicom.dcmread(output / rel)
        assert ds.PatientIdentityRemoved == "YES"
        assert rel == f"dicom/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        studies.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.SeriesInstanceUID))
        assert rec["actions"] and all(isinstance(v, int) for v in rec["actions"].values())
    assert sorted(len(series) for series in studies.values()) == [2, 2]

    # The slide: an Aperio SVS in (OpenSlide reads the demo's input as Aperio), an Aperio-layout
    # pyramid out, named by its pseudonym, with the input's MPP, a regenerated thumbnail, and the
    # label and macro dropped (the default).
    (svs,) = [p for p in inputs if p.suffix == ".svs"]
    source = openslide.OpenSlide(str(svs))
    assert source.properties["openslide.vendor"] == "aperio"
    assert set(source.associated_images) == {"label", "macro", "thumbnail"}
    (slide,) = [r for r in audit if r["kind"] == "wsi"]
    assert slide["status"] == "ok", slide
    (rel,) = slide["outputs"]
    assert re.fullmatch(r"wsi/[A-Z2-9]{16}\.svs", rel), rel
    assert slide["details"]["layout"] == "aperio"
    result = openslide.OpenSlide(str(output / rel))
    assert result.properties["openslide.vendor"] == "aperio"
    assert result.dimensions == source.dimensions == (1024, 1024)
    assert float(result.properties["openslide.mpp-x"]) == float(result.properties["openslide.mpp-y"]) == 0.499
    assert set(result.associated_images) == {"thumbnail"}
    assert {k: slide["actions"][k] for k in ("label_dropped", "macro_dropped", "thumbnail_regenerated")} == {
        "label_dropped": 1,
        "macro_dropped": 1,
        "thumbnail_regenerated": 1,
    }

    # The console: the job's own last progress line (stderr) and its summary (stdout).
    progress = [line for line in captured.err.splitlines() if line.startswith("progress: ")]
    assert progress and progress[-1].startswith(
        f"progress: {len(inputs)}/{len(inputs)} inputs done ({len(dead)} dead-lettered), slide tiles 16/16, "
    ), progress
    assert f"inputs:            {len(inputs)} (dicom 14, unknown 2, wsi 1)" in captured.out
    assert "dead-lettered:     4 (burned_in_annotation 1, invalid_input 2, unsupported_format 1)" in captured.out
    assert re.search(r"^  label_dropped +1$", captured.out, re.M)
    assert f"  slides:       {output}/wsi/" in captured.out

    # No PHI anywhere under OUTPUT (bytes and names), nor in stdout/stderr.
    for rel, data in _tree(output).items():
        lowered = data.lower()
        for value in PHI:
            assert value.lower().encode() not in lowered, f"a PHI value leaked into {rel}"
            assert value.lower().encode("utf-16-le") not in lowered, f"a PHI value leaked into {rel} (UTF-16)"
            assert value.lower() not in rel.lower()
    for value in PHI:
        assert value not in captured.out and value not in captured.err

    # Linkage: the only place original identifiers may appear, and only when asked.
    patient_rows = (linkage / "patient_id_mapping.csv").read_text().splitlines()
    assert patient_rows[0] == "id_old,id_new"
    assert {row.split(",")[0] for row in patient_rows[1:]} >= {"MRN-0042-77", "MRN-0099-13"}
    uid_rows = (linkage / "uid_mapping.csv").read_text().splitlines()
    assert uid_rows[0] == "id_old,id_new" and len(uid_rows) > 12

    # Idempotent: a second run with the same key rewrites the same outputs and adds only its own
    # record files and manifest, whose records equal the first run's.
    first = {k: v for k, v in _tree(output).items()}
    assert _run(demo_inputs, output) == 0
    second = _tree(output)
    added = sorted(set(second) - set(first))
    assert [k.split("/")[0] for k in added] == ["audit", "dead_letter", "runs"]
    changed = [k for k in first if first[k] != second[k]]
    assert not changed, f"re-run changed {changed}"
    for folder in ("audit", "dead_letter"):
        (old,) = [v for k, v in first.items() if k.startswith(f"{folder}/")]
        (new,) = [v for k, v in second.items() if k in added and k.startswith(f"{folder}/")]
        assert new == old


def test_demo_data_is_the_same_on_every_call(tmp_path: Path) -> None:
    """Same bytes, so the same UIDs and output paths: `make demo` twice writes the same outputs."""
    module = _load_demo_module()
    trees = []
    for name in ("first", "second"):
        module.main(str(tmp_path / name))
        root = tmp_path / name
        trees.append({str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()})
    assert trees[0] == trees[1]
    assert len(trees[0]) == 18  # 17 inputs and the key


def test_bad_options_exit_non_zero_with_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--output", str(tmp_path), *BEAM_TEST_ARGS]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --input is required")


def test_unwritable_output_exits_non_zero(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--input", str(tmp_path), "--output", str(blocker / "sub"), *BEAM_TEST_ARGS]) == 2
    assert "--output is not writable" in capfd.readouterr().err


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from pipeline.options import DeidOptions

    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    parser = argparse.ArgumentParser()
    DeidOptions._add_argparse_args(parser)
    names = [s for action in parser._actions for s in action.option_strings if s.startswith("--") and s != "--help"]
    assert len(names) > 30
    missing = [name for name in names if name not in shown]
    assert not missing
