"""The spawned slide probe: crashes, hangs and errors of native decoders become DeidErrors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deid.errors import SlideReadError, UnsupportedFormatError
from deid.wsi import probe
from deid.wsi.probe import probe_isolated


def _fake_interpreter(tmp_path: Path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_decoder_crash_is_reported_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe.sys, "executable", _fake_interpreter(tmp_path, "kill -SEGV $$"))
    with pytest.raises(SlideReadError, match=r"crashed \(signal 11\)"):
        probe_isolated("/nowhere/slide.svs", 512)


def test_a_hanging_decoder_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe.sys, "executable", _fake_interpreter(tmp_path, "sleep 30"))
    with pytest.raises(SlideReadError, match="longer than 1 s"):
        probe_isolated("/nowhere/slide.svs", 512, timeout_s=1)


def test_child_stderr_never_reaches_the_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe.sys, "executable", _fake_interpreter(tmp_path, "echo DOE_JANE_slide >&2; exit 7"))
    with pytest.raises(SlideReadError, match="exit status 7") as caught:
        probe_isolated("/x/DOE_JANE_slide.svs", 512)
    assert "DOE" not in str(caught.value)


def test_real_fixtures(shared_data: Path) -> None:
    assert sys.executable  # the real interpreter runs `python -m deid.wsi.probe`
    probe_isolated(str(shared_data / "wsi" / "openslide-fixture-boxes.tiff"), 512)
    with pytest.raises((UnsupportedFormatError, SlideReadError), match="OpenSlide|slide"):
        probe_isolated(str(shared_data / "wsi" / "openslide-fixture-unopenable.tiff"), 512)


def test_not_a_slide_is_unsupported(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tiff"
    junk.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises((UnsupportedFormatError, SlideReadError)):
        probe_isolated(str(junk), 512)
