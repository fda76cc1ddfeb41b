"""List inputs and classify each object by content; every listed input gets exactly one record.

Local inputs are listed by `walk_local`, which walks the same tree as Beam's LocalFileSystem.match
and matches the same patterns, but reports what MatchFiles silently drops: a directory it cannot
list becomes one dead letter `unreadable_directory` (the files in it were never seen). gs:// inputs
are listed by fileio.MatchFiles. Each listed path is then checked and read once:

- not a regular file (FIFO, socket, device; reading could block forever): `not_a_regular_file`,
  never opened;
- cannot be read (permissions, vanished, a broken link): `unreadable`;
- otherwise hashed and classified (an InputRef), and `admit` decides whether a branch takes it.

A MIRAX slide is one input: `_MiraxUnitsFn` turns a listed `.mrxs` file whose same-named folder
holds a Slidedat.ini into a `ListedUnit` (the folder's files as its companions, whether the pattern
matched them or not) and drops those folder files from the listing; both decisions use the same
test (`_MiraxUnitsFn._unit_files`), so a folder file is never both a companion and an input. The
unit is hashed as the `.mrxs` file (its `input_sha256`), sized as all its files, and named by a
digest of all of them (`InputRef.group_key`). A `.mrxs` file without that folder, or whose
Slidedat.ini is not one, is a dead letter `unsupported_format` saying so.

A record whose bytes could not be read names its input by `DeidKey.path_id` of its path relative
to --input (for a glob, to the directory before its first wildcard): 64 hex characters like a
content hash, stable for one key, and never the path itself.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from deid.classify import HEAD_BYTES, InputRef, Kind, classify_head
from deid.errors import (
    DeidError,
    InputTooLargeError,
    InvalidInputError,
    NotARegularFileError,
    UnreadableDirectoryError,
    UnreadableInputError,
    UnsupportedFormatError,
)
from deid.keys import DeidKey
from deid.records import DeadLetterRecord
from deid.settings import RunSettings, is_glob
from deid.wsi.mirax import is_mrxs_name, is_slidedat_name, looks_like_slidedat, unit_folder
from transforms.common import METRICS_NAMESPACE, load_run_key
from transforms.files import TMP_DIR, sha256_and_head

# Tagged output of the listing DoFns: DeadLetterRecords of inputs that were listed but not read.
NOT_READ = "not_read"
_ID_NOTE = "its input_sha256 is a keyed hash of its path relative to --input"


def input_pattern(input_location: str) -> str:
    """A directory (local or gs:// prefix) means everything below it; a glob is used as given."""
    if is_glob(input_location):
        return input_location
    return input_location.rstrip("/") + "/**"


def listing_root(pattern: str) -> str:
    """The directory a pattern is listed from (Beam's rule): before the first wildcard, up to a '/'."""
    prefix = re.match(r"^[^[*?]*", pattern)
    static = prefix.group(0) if prefix else ""
    if static == pattern:
        return static
    head = static.rsplit("/", 1)[0] if "/" in static else ""
    return head or ("/" if static.startswith("/") else "")


def relative_to_root(path: str, root: str) -> str:
    base = root.rstrip("/") + "/"
    return path[len(base) :] if path.startswith(base) else path


def _may_hold_matches(relative_dir: str, pattern_parts: list[str]) -> bool:
    """Whether files below a directory (relative to the listing root) can match the pattern."""
    if not relative_dir:
        return True
    for index, name in enumerate(relative_dir.split("/")):
        if index >= len(pattern_parts) - 1:
            return any("**" in part for part in pattern_parts)
        part = pattern_parts[index]
        if "**" in part:
            return True
        if not fnmatch.fnmatchcase(name, part):
            return False
    return True


def walk_local(pattern: str, skip: Callable[[str], bool]) -> Iterator[tuple[str, bool]]:
    """(path, True) for every local path matching `pattern` that is not a directory, and
    (directory, False) for every directory that could not be listed and might hold matches.

    Directories for which `skip(directory + '/')` is true (OUTPUT, our .tmp/) are not entered.
    Symbolic links to directories are not followed, as in Beam's own listing.
    """
    root = listing_root(pattern)
    if root == pattern:  # no wildcard: one file
        if os.path.lexists(pattern):
            yield pattern, True
        return
    matches = re.compile(FileSystem.translate_pattern(pattern)).match
    parts = relative_to_root(pattern, root).split("/")
    failed: list[OSError] = []
    for directory, subdirs, names in os.walk(root, onerror=failed.append):
        while failed:
            error = failed.pop()
            if error.filename is not None:
                yield os.fsdecode(error.filename), False
        kept = []
        for name in subdirs:
            child = os.path.join(directory, name)
            if not skip(child + "/") and _may_hold_matches(relative_to_root(child, root), parts):
                kept.append(name)
        subdirs[:] = kept
        for name in names:
            path = os.path.join(directory, name)
            if matches(path) and not skip(path):
                yield path, True
    for error in failed:
        if error.filename is not None:
            yield os.fsdecode(error.filename), False


def _reason(exc: BaseException) -> str:
    """The type and errno name of a failure: never its text, which quotes the path."""
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
    return f"{type(exc).__name__}{f' {name}' if name else ''}"


def check_regular_file(path: str) -> None:
    """Raise NotARegularFileError / UnreadableInputError before anything opens a local path."""
    if "://" in path:
        return  # objects in a bucket are always regular
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise UnreadableInputError(unreadable_message(exc)) from None
    if not stat.S_ISREG(mode):
        raise NotARegularFileError(
            f"the input is not a regular file (a FIFO, socket or device) and was skipped unread; {_ID_NOTE}"
        )


def unreadable_message(exc: BaseException) -> str:
    return f"the input could not be read ({_reason(exc)}); {_ID_NOTE}. Check its permissions and run again"


class _ListingFn(beam.DoFn):
    """Holds the run key (loaded in setup) to name inputs that were listed but not read."""

    def __init__(self, settings: RunSettings, root: str) -> None:
        self._settings = settings
        self._root = root
        self._key: DeidKey | None = None

    def setup(self) -> None:
        self._key = load_run_key(self._settings)

    def _not_read(self, path: str, exc: DeidError) -> TaggedOutput:
        assert self._key is not None
        Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{exc.error_kind}").inc()
        record = DeadLetterRecord(self._key.path_id(relative_to_root(path, self._root)), exc.error_kind, str(exc))
        return TaggedOutput(NOT_READ, record)


class _WalkLocalFn(_ListingFn):
    """pattern -> matching paths; directories that cannot be listed to NOT_READ."""

    def __init__(self, settings: RunSettings, root: str, skip_prefix: str) -> None:
        super().__init__(settings, root)
        self._skip_prefix = skip_prefix

    def process(self, pattern: str) -> Iterator[str | TaggedOutput]:
        for path, listed in walk_local(pattern, lambda p: _own_file(p, self._skip_prefix)):
            if listed:
                yield path
            else:
                yield self._not_read(
                    path,
                    UnreadableDirectoryError(
                        "a directory under --input could not be listed, so the files in it were not "
                        f"processed; {_ID_NOTE}. Check its permissions and run again"
                    ),
                )


@dataclass(frozen=True)
class ListedUnit:
    """A listed input made of several files: a MIRAX `.mrxs` file and its folder's files."""

    # repr=False: Beam logs elements at DEBUG, and an input path can carry PHI.
    path: str = field(repr=False)
    companions: tuple[str, ...] = field(repr=False)


class _MiraxUnitsFn(beam.DoFn):
    """path -> path, or ListedUnit for a .mrxs file with its folder; that folder's files -> nothing."""

    def __init__(self, pattern: str, output_prefix: str) -> None:
        self._pattern = pattern
        self._output_prefix = output_prefix

    def setup(self) -> None:
        root = listing_root(self._pattern)
        self._single = root == self._pattern
        self._matches = re.compile(FileSystem.translate_pattern(self._pattern)).match
        self._folders: dict[str, tuple[str, ...]] = {}

    def process(self, path: str) -> Iterator[str | ListedUnit]:
        if is_mrxs_name(path):
            files = self._unit_files(unit_folder(path))
            yield ListedUnit(path, files) if files else path
            return
        folder = posixpath.dirname(path)
        for suffix in (".mrxs", ".MRXS"):
            index = folder + suffix
            listed = (self._single and index == self._pattern) or (
                not self._single and self._matches(index) and not _own_file(index, self._output_prefix)
            )
            if listed and _exists(index) and self._unit_files(folder):
                return  # a companion of that .mrxs file's unit
        yield path

    def _unit_files(self, folder: str) -> tuple[str, ...]:
        """The files directly in a MIRAX folder, when one of them is named Slidedat.ini; else ()."""
        if folder not in self._folders:
            files = _folder_files(folder)
            has_slidedat = any(is_slidedat_name(posixpath.basename(name)) for name in files)
            self._folders[folder] = tuple(sorted(files)) if has_slidedat else ()
        return self._folders[folder]


def _exists(path: str) -> bool:
    if "://" not in path:
        return os.path.lexists(path)
    try:
        return bool(FileSystems.exists(path))
    except Exception:  # noqa: BLE001 - an unreachable object is no unit
        return False


def _folder_files(folder: str) -> list[str]:
    """Non-directory entries directly in `folder` (local or an object-store prefix); [] if unlistable."""
    if "://" in folder:
        try:
            results = FileSystems.match([folder + "/*"])
        except Exception:  # noqa: BLE001 - Beam raises BeamIOError for a missing prefix
            return []
        return [m.path for result in results for m in result.metadata_list]
    try:
        with os.scandir(folder) as entries:
            return [os.path.join(folder, entry.name) for entry in entries if not entry.is_dir()]
    except OSError:
        return []


class _ClassifyFn(_ListingFn):
    """path -> InputRef (path, size, sha256, kind), reading each object once, streaming; inputs
    that are not regular files or cannot be read go to NOT_READ. A ListedUnit -> one InputRef."""

    def process(self, element: str | ListedUnit) -> Iterator[InputRef | TaggedOutput]:
        if isinstance(element, ListedUnit):
            yield from self._unit(element)
            return
        path = element
        try:
            check_regular_file(path)
            sha256, head, size = sha256_and_head(path, HEAD_BYTES)
        except DeidError as exc:
            yield self._not_read(path, exc)
            return
        except Exception as exc:  # noqa: BLE001 - any failure to read: its text may quote the path
            yield self._not_read(path, UnreadableInputError(unreadable_message(exc)))
            return
        kind, subtype = classify_head(head)
        Metrics.counter(METRICS_NAMESPACE, f"inputs_{kind}").inc()
        yield InputRef(path=path, size=size, sha256=sha256, kind=kind, subtype=subtype)

    def _unit(self, unit: ListedUnit) -> Iterator[InputRef | TaggedOutput]:
        """A MIRAX unit: hashed as its .mrxs file, sized and named by all its files (module docstring)."""
        try:
            for path in (unit.path, *unit.companions):
                check_regular_file(path)
            sha256, _head, size = sha256_and_head(unit.path, HEAD_BYTES)
            digest = hashlib.sha256(sha256.encode("ascii"))
            slidedat = False
            for path in unit.companions:
                part_sha, part_head, part_size = sha256_and_head(path, HEAD_BYTES)
                name = posixpath.basename(path)
                digest.update(b"\0" + name.encode("utf-8", "surrogateescape") + b"\0" + part_sha.encode("ascii"))
                size += part_size
                slidedat = slidedat or (is_slidedat_name(name) and looks_like_slidedat(part_head))
        except DeidError as exc:
            yield self._not_read(unit.path, exc)
            return
        except Exception as exc:  # noqa: BLE001 - any failure to read: its text may quote the path
            yield self._not_read(unit.path, UnreadableInputError(unreadable_message(exc)))
            return
        kind: Kind = "wsi" if slidedat else "unknown"
        Metrics.counter(METRICS_NAMESPACE, f"inputs_{kind}").inc()
        yield InputRef(
            path=unit.path,
            size=size,
            sha256=sha256,
            kind=kind,
            subtype="mrxs",
            companions=unit.companions,
            group_key=digest.hexdigest(),
        )


def admit(ref: InputRef, max_file_bytes: int) -> InputRef:
    """Raise the dead-letter reason for inputs no branch will take; pass the others through."""
    if ref.size == 0:
        raise InvalidInputError("input is empty (0 bytes); nothing to de-identify")
    if ref.size > max_file_bytes:
        raise InputTooLargeError(
            f"input is {ref.size} bytes, over --max_file_bytes={max_file_bytes}; raise the limit to process it"
        )
    if ref.kind == "unknown" and ref.subtype == "mrxs":
        raise UnsupportedFormatError(
            "a MIRAX slide (.mrxs) whose same-named folder holds no Slidedat.ini with [GENERAL] and "
            "[HIERARCHICAL] sections, so it cannot be read as MIRAX; copy the slide's complete folder "
            "beside the .mrxs file and run again"
        )
    if ref.kind == "unknown" and is_mrxs_name(ref.path):
        raise UnsupportedFormatError(
            "a MIRAX .mrxs file without its same-named folder (Slidedat.ini, Index.dat, Data*.dat) beside "
            "it; copy the whole folder next to the .mrxs file and run again"
        )
    if ref.kind == "unknown":
        raise UnsupportedFormatError(
            "content is neither DICOM (no DICM preamble, no parsable dataset) nor a TIFF-based slide; "
            "only DICOM files and whole-slide images are accepted"
        )
    return ref


def _own_file(path: str, output_prefix: str) -> bool:
    """Objects under OUTPUT (when OUTPUT lies inside INPUT) and under our .tmp/ are not inputs."""
    return path.startswith(output_prefix) or f"/{TMP_DIR}/" in path


def _metadata_path(metadata: Any) -> str:  # fileio.FileMetadata
    return str(metadata.path)


class ListInputs(beam.PTransform):
    """PBegin -> (PCollection[InputRef], PCollection[DeadLetterRecord]) for every object under INPUT.

    Objects under OUTPUT (when OUTPUT lies inside INPUT) are skipped, and so is our own .tmp/.
    The dead letters are the listed inputs that were not read (module docstring); `settings`
    gives the run key that names them (without it, a key made for this transform).
    """

    def __init__(self, input_location: str, output_location: str, settings: RunSettings | None = None) -> None:
        super().__init__()
        self._pattern = input_pattern(input_location)
        self._root = listing_root(self._pattern)
        self._output = output_location.rstrip("/") + "/"
        self._settings = settings or RunSettings(output=output_location, key_token=DeidKey.generate().to_token())

    def expand(self, pbegin: beam.pvalue.PBegin) -> tuple[beam.PCollection, beam.PCollection]:
        output, settings = self._output, self._settings
        if "://" in self._pattern:
            paths = (
                pbegin
                | "Match" >> fileio.MatchFiles(self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
                | "Paths" >> beam.Map(_metadata_path)
                | "SkipOwnOutput" >> beam.Filter(lambda path: not _own_file(path, output))
            )
            unlisted: beam.PCollection = pbegin | "NoUnlistedDirs" >> beam.Create([])
        else:
            walked = (
                pbegin
                | "Pattern" >> beam.Create([self._pattern])
                | "Walk" >> beam.ParDo(_WalkLocalFn(settings, self._root, output)).with_outputs(NOT_READ, main="paths")
            )
            paths, unlisted = walked["paths"], walked[NOT_READ]
        classified = (
            paths
            | "MiraxUnits" >> beam.ParDo(_MiraxUnitsFn(self._pattern, output))
            | "Reshuffle" >> beam.Reshuffle()
            | "Classify" >> beam.ParDo(_ClassifyFn(settings, self._root)).with_outputs(NOT_READ, main="refs")
        )
        return classified["refs"], (unlisted, classified[NOT_READ]) | "NotRead" >> beam.Flatten()


def own_file(path: str, output_location: str) -> bool:
    """Objects under OUTPUT and under our .tmp/ are never inputs (the listing's rule, for the event mode)."""
    return _own_file(path, output_location.rstrip("/") + "/")


def in_listing(path: str, pattern: str, output_location: str) -> bool:
    """Whether the listing of `pattern` would take `path`: it matches, and is neither under OUTPUT
    nor our .tmp/ (the event mode's scope for notified and watched objects)."""
    output = output_location.rstrip("/") + "/"
    return bool(re.match(FileSystem.translate_pattern(pattern), path)) and not _own_file(path, output)


class ClassifyPaths(beam.PTransform):
    """PCollection[str] of paths under `pattern` -> (PCollection[InputRef], PCollection[DeadLetterRecord]):
    what ListInputs does with the paths it lists (MIRAX units, then reading and classifying each
    input once), for paths found otherwise (the event mode's notifications and polls)."""

    def __init__(self, pattern: str, output_location: str, settings: RunSettings) -> None:
        super().__init__()
        self._pattern = pattern
        self._output = output_location.rstrip("/") + "/"
        self._settings = settings

    def expand(self, paths: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        classified = (
            paths
            | "MiraxUnits" >> beam.ParDo(_MiraxUnitsFn(self._pattern, self._output))
            | "Reshuffle" >> beam.Reshuffle()
            | "Classify"
            >> beam.ParDo(_ClassifyFn(self._settings, listing_root(self._pattern))).with_outputs(NOT_READ, main="refs")
        )
        return classified["refs"], classified[NOT_READ]
