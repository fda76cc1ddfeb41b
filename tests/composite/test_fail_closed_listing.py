"""ListInputs on an in-process runner (issue 11, part 7): a FIFO is recorded unread, every record
of an input that was not read names it by the run key's hash of its path relative to --input, and
the local listing matches exactly what Beam's own MatchFiles would list."""

from __future__ import annotations

import os
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from deid.keys import DeidKey
from deid.settings import RunSettings
from tests.support import dicom_factory
from tests.support.env import BEAM_TEST_ARGS
from transforms.listing import ListInputs, input_pattern, walk_local

KEY = DeidKey(b"listing-test-key-0123456789abcdef")


def _settings(output: Path) -> RunSettings:
    return RunSettings(output=str(output), key_token=KEY.to_token())


def test_a_fifo_is_dead_lettered_unread_by_a_keyed_hash_of_its_relative_path(tmp_path: Path) -> None:
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    (source / "a.dcm").write_bytes(dicom_factory.to_bytes(dicom_factory.instance(1, 1)))
    os.mkfifo(source / "sub" / "PIPE_DOE.dcm")
    output = tmp_path / "out"

    with TestPipeline(options=PipelineOptions(BEAM_TEST_ARGS), blocking=True) as p:
        refs, dead = p | ListInputs(str(source), str(output), _settings(output))
        assert_that(refs | beam.Map(lambda r: (Path(r.path).name, r.kind)), equal_to([("a.dcm", "dicom")]))
        records = dead | beam.Map(lambda d: (d.input_sha256, d.error_kind, d.kind, "PIPE_DOE" in d.message))
        expected = [(KEY.path_id("sub/PIPE_DOE.dcm"), "not_a_regular_file", "unknown", False)]
        assert_that(records, equal_to(expected), label="FifoRecord")


@pytest.mark.parametrize("pattern", ["**", "*.dcm", "*/*.dcm", "a*/**", "a1/x*", "**/*.img", "b/c/*"])
def test_the_local_listing_matches_what_beam_lists(tmp_path: Path, pattern: str) -> None:
    root = tmp_path / "in"
    for relative in ("top.dcm", "a1/x.dcm", "a1/y.img", "a2/deep/z.dcm", "b/c/w.dcm", "b/c/d/v.img"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x")
    full = f"{root}/{pattern}"
    beams = sorted(m.path for m in FileSystems.match([full])[0].metadata_list)
    ours = sorted(path for path, listed in walk_local(full, lambda _p: False) if listed)
    assert ours == beams and ours


def test_a_directory_input_lists_everything_below_it_but_our_own_output(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "out" / ".tmp").mkdir(parents=True)
    (root / "out" / "old.dcm").write_bytes(b"x")
    (root / "keep.dcm").write_bytes(b"x")
    own = f"{root}/out/"
    listed = list(walk_local(input_pattern(str(root)), lambda path: path.startswith(own)))
    assert listed == [(f"{root}/keep.dcm", True)]
