"""Listing groups a MIRAX .mrxs file and its same-named folder into one input; nothing else is grouped."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from deid.errors import UnsupportedFormatError
from tests.support import mirax_factory
from tests.support.env import BEAM_TEST_ARGS
from transforms.listing import ListInputs, admit


def _pipeline() -> TestPipeline:
    return TestPipeline(options=PipelineOptions(BEAM_TEST_ARGS), blocking=True)


def _summary(ref):  # type: ignore[no-untyped-def]
    return (
        Path(ref.path).name,
        ref.kind,
        ref.subtype,
        ref.sha256,
        tuple(Path(c).name for c in ref.companions),
        bool(ref.group_key),
    )


def _tree(tmp_path: Path) -> Path:
    source = tmp_path / "in"
    mirax_factory.write_mirax(source / "case", "slide-A")
    (source / "case" / "lonely.mrxs").write_bytes(b"an index without its folder")
    (source / "case" / "notes.txt").write_bytes(b"a neighbour of the slide, not part of it")
    (source / "plain").mkdir()
    (source / "plain" / "Data0000.dat").write_bytes(b"a data file with no .mrxs beside its folder")
    return source


def test_a_mrxs_and_its_folder_are_one_input(tmp_path: Path) -> None:
    source = _tree(tmp_path)
    mrxs = source / "case" / "slide-A.mrxs"
    expected = [
        ("slide-A.mrxs", "wsi", "mrxs", hashlib.sha256(mrxs.read_bytes()).hexdigest(),
         ("Data0000.dat", "Index.dat", "Slidedat.ini"), True),
        ("lonely.mrxs", "unknown", "", hashlib.sha256(b"an index without its folder").hexdigest(), (), False),
        ("notes.txt", "unknown", "", hashlib.sha256(b"a neighbour of the slide, not part of it").hexdigest(), (),
         False),
        ("Data0000.dat", "unknown", "", hashlib.sha256(b"a data file with no .mrxs beside its folder").hexdigest(),
         (), False),
    ]
    with _pipeline() as p:
        refs, unreadable = p | ListInputs(str(source), str(tmp_path / "out"))
        assert_that(refs | beam.Map(_summary), equal_to(expected))
        assert_that(unreadable, equal_to([]), label="NothingUnread")


def test_a_glob_that_matches_only_the_mrxs_still_brings_its_folder(tmp_path: Path) -> None:
    source = _tree(tmp_path)
    with _pipeline() as p:
        refs, _ = p | ListInputs(str(source / "case" / "*.mrxs"), str(tmp_path / "out"))
        names = refs | beam.Map(lambda r: (Path(r.path).name, len(r.companions)))
        assert_that(names, equal_to([("slide-A.mrxs", 3), ("lonely.mrxs", 0)]))


def test_folder_files_listed_without_their_mrxs_stay_separate_inputs(tmp_path: Path) -> None:
    source = _tree(tmp_path)
    with _pipeline() as p:
        refs, _ = p | ListInputs(str(source / "case" / "slide-A"), str(tmp_path / "out"))
        names = refs | beam.Map(lambda r: Path(r.path).name)
        assert_that(names, equal_to(["Data0000.dat", "Index.dat", "Slidedat.ini"]))


def test_mirax_dead_letters_say_what_to_do(tmp_path: Path) -> None:
    from deid.classify import InputRef

    lone = InputRef("/in/x.mrxs", 3, "0" * 64, "unknown", "")
    with pytest.raises(UnsupportedFormatError, match="without its same-named folder"):
        admit(lone, 10**9)
    bad_unit = InputRef("/in/x.mrxs", 3, "0" * 64, "unknown", "mrxs", companions=("/in/x/Slidedat.ini",))
    with pytest.raises(UnsupportedFormatError, match="holds no Slidedat.ini"):
        admit(bad_unit, 10**9)
    sized = InputRef("/in/x.mrxs", 3 * 10**9, "0" * 64, "wsi", "mrxs", companions=("/in/x/Data0000.dat",))
    with pytest.raises(Exception, match="max_file_bytes"):
        admit(sized, 10**9)  # the limit counts every file of the unit
