"""Every file the pipeline touches, through Beam's filesystems (local paths and gs:// alike).

Reading inputs (`read_all`, `iter_chunks`, `sha256_and_head`, `open_input`); publishing outputs
under OUTPUT atomically (`write_atomically` for bytes, `publish_file` and `publish` for local files
such as a pyramid larger than memory), all by one protocol, `_stage` then `_rename_into_place`;
record files, which are only ever added (`write_record`: on an object store uploaded straight to
their name and never replacing an object, so writing one needs no right to read or delete);
scratch storage for WSI pyramid batches (`LocalScratch`, `FileSystemsScratch`, `make_scratch`); local
copies of slides for OpenSlide (`localized`) and the per-worker cache of open slides (`SlideReaders`).

A full disk is not an input's failure: every write here turns an OSError ENOSPC/EDQUOT into
`OutOfSpaceError` (after removing its own partial file), which `transforms.common` never lets become
a dead letter, so the run fails and the launcher exits 1 with one line (`is_out_of_space` finds it
however Beam wrapped it). Files staged across a stage boundary (`stage_bytes`) live under
OUTPUT/.tmp/<run id>/, which the launcher removes when the run ends (`remove_tree`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import posixpath
import re
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Generic, Protocol, TypeVar

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from deid.errors import InputTooLargeError, InvalidInputError, OutOfSpaceError
from deid.wsi.mirax import SLIDEDAT
from deid.wsi.scratch import Scratch

READ_CHUNK = 8 * 1024 * 1024
TMP_DIR = ".tmp"
# Every staging file's name ends so, and no published output's or record's does: on the Terraform
# deployment the worker may read and delete only objects with this suffix (terraform/security.tf).
STAGING_SUFFIX = ".part"
# Never let Beam guess compression from a name: inputs are classified by content, not extension.
RAW = CompressionTypes.UNCOMPRESSED

# -- reading -----------------------------------------------------------------------------------------


def open_input(path: str) -> Any:
    """A binary reader over any Beam filesystem (the leak harvest's `opener`)."""
    return FileSystems.open(path, compression_type=RAW)


def read_all(path: str, max_bytes: int) -> bytes:
    """Read a whole object, refusing more than `max_bytes` (checked while reading)."""
    chunks: list[bytes] = []
    total = 0
    with FileSystems.open(path, compression_type=RAW) as handle:
        for chunk in iter(lambda: handle.read(READ_CHUNK), b""):
            total += len(chunk)
            if total > max_bytes:
                raise InputTooLargeError(
                    f"input is larger than --max_file_bytes={max_bytes}; raise the limit to process it"
                )
            chunks.append(chunk)
    return b"".join(chunks)


def iter_chunks(path: str) -> Iterator[bytes]:
    with FileSystems.open(path, compression_type=RAW) as handle:
        yield from iter(lambda: handle.read(READ_CHUNK), b"")


def sha256_and_head(path: str, head_bytes: int) -> tuple[str, bytes, int]:
    """One streaming pass: content hash, the first `head_bytes` bytes and the size."""
    digest = hashlib.sha256()
    head = b""
    size = 0
    for chunk in iter_chunks(path):
        if len(head) < head_bytes:
            head += chunk[: head_bytes - len(head)]
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), head, size


# -- a full disk -------------------------------------------------------------------------------------

_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How a full disk reads once Beam has turned the exception into text (a RuntimeError naming the
# original type, a BeamIOError's details, a failed pipeline's message).
_NO_SPACE_TEXT = re.compile(r"\[Errno (?:28|122)\]|OSError\((?:28|122), |no space left on|disk quota exceeded", re.I)


def is_out_of_space_text(text: str) -> bool:
    return bool(_NO_SPACE_TEXT.search(text))


def is_out_of_space(exc: BaseException | None) -> bool:
    """Whether `exc` is, wraps or was caused by a full disk (ENOSPC, EDQUOT, OutOfSpaceError)."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OutOfSpaceError):
            return True
        if isinstance(current, OSError) and (current.errno in _NO_SPACE_ERRNOS or is_out_of_space_text(str(current))):
            return True
        if isinstance(current, BeamIOError):
            pending += [e for e in (current.exception_details or {}).values() if isinstance(e, BaseException)]
        beam_wrapper = type(current) is RuntimeError or type(current).__module__.startswith("apache_beam")
        if beam_wrapper and is_out_of_space_text(str(current)):
            return True  # Beam's re-raise of a worker's exception keeps only its text
        pending += [current.__cause__, current.__context__]
    return False


@contextlib.contextmanager
def no_space_is_fatal() -> Iterator[None]:
    """Re-raise a full disk as OutOfSpaceError; other errors pass unchanged."""
    try:
        yield
    except OutOfSpaceError:
        raise
    except OSError as exc:
        if is_out_of_space(exc):
            raise OutOfSpaceError() from exc
        raise


def remove_tree(root: str) -> None:
    """Best-effort removal of a directory (local) or every object under a prefix (gs://)."""
    if "://" not in root:
        shutil.rmtree(root, ignore_errors=True)
        return
    with contextlib.suppress(Exception):  # leftovers are harmless, the run's own outcome is not
        matched = FileSystems.match([f"{root.rstrip('/')}/**"])[0].metadata_list
        if matched:
            FileSystems.delete([m.path for m in matched])


# -- publishing under OUTPUT -------------------------------------------------------------------------


def output_path(output_root: str, relpath: str) -> str:
    return FileSystems.join(output_root, *relpath.split("/"))


def _staging_path(output_root: str, run_id: str = "") -> str:
    """A unique name under OUTPUT/.tmp/ (OUTPUT/.tmp/<run_id>/ if given): every output is staged there first."""
    name = f"{uuid.uuid4().hex}{STAGING_SUFFIX}"
    return FileSystems.join(output_root, TMP_DIR, *([run_id] if run_id else []), name)


def run_staging_dir(output_root: str, run_id: str) -> str:
    """Where `stage_bytes(..., run_id)` stages: removed by the launcher when the run ends."""
    return FileSystems.join(output_root, TMP_DIR, run_id)


def _ensure_parent(path: str) -> None:
    if "://" in path:
        return  # object stores have no directories
    parent = os.path.dirname(path)
    if parent:
        # exist_ok: workers write into the same directories at the same time. Not cached: the
        # directory may be removed between two runs in one process.
        os.makedirs(parent, exist_ok=True)


def _discard(path: str) -> None:
    with contextlib.suppress(Exception):  # a leftover staging file is harmless, the error is not
        FileSystems.delete([path])


@contextlib.contextmanager
def _stage(output_root: str, run_id: str = "") -> Iterator[tuple[str, IO[bytes]]]:
    """(staging path, writable handle); the staged file is removed if writing fails."""
    staging = _staging_path(output_root, run_id)
    try:
        with no_space_is_fatal():
            _ensure_parent(staging)
            with FileSystems.create(staging, mime_type="application/octet-stream", compression_type=RAW) as handle:
                yield staging, handle
    except BaseException:
        _discard(staging)
        raise


def _rename_into_place(staging: str, final: str) -> None:
    # A re-run with the same key writes the same name: the rename replaces it (os.rename on a
    # local disk, copy-then-delete on GCS), so readers never see the name missing.
    try:
        with no_space_is_fatal():
            _ensure_parent(final)
            FileSystems.rename([staging], [final])
    except BaseException:
        _discard(staging)
        raise


def write_atomically(output_root: str, relpath: str, data: bytes) -> str:
    """Write `data` to OUTPUT/relpath so that readers see either nothing or the whole file.

    The bytes go to OUTPUT/.tmp/ first and are renamed into place: on a local disk the rename is
    atomic; on GCS a rename is a copy then delete, and the copy appears whole. Returns `relpath`.
    """
    with _stage(output_root) as (staging, handle):
        handle.write(data)
    _rename_into_place(staging, output_path(output_root, relpath))
    return relpath


def stage_bytes(output_root: str, data: bytes, run_id: str = "") -> str:
    """Stage `data` under OUTPUT/.tmp/<run_id>/ for a later `publish_staged` (or `discard_staged`);
    a run that fails before publishing it leaves nothing behind (`run_staging_dir`)."""
    with _stage(output_root, run_id) as (staging, handle):
        handle.write(data)
    return staging


def publish_staged(staging: str, output_root: str, relpath: str) -> str:
    """Rename a file from `stage_bytes` into OUTPUT/relpath. Idempotent: a retry after the rename
    succeeded finds the staged file gone and the output in place."""
    final = output_path(output_root, relpath)
    if not FileSystems.exists(staging) and _listed(final):
        return relpath
    _rename_into_place(staging, final)
    return relpath


def _listed(path: str) -> bool:
    """Whether `path` exists, found by listing: on Cloud Storage that needs storage.objects.list
    only, not the right to read the object (the Terraform deployment grants workers no read of
    published outputs or records)."""
    return any(m.path == path for m in FileSystems.match([path])[0].metadata_list)


def write_record(root: str, relpath: str, data: bytes) -> str:
    """Write a record file (audit, dead letters, linkage table, manifest) at ROOT/relpath.

    On a local disk this is `write_atomically`. On an object store (gs://) the bytes are uploaded
    straight to their name: an upload becomes visible only once complete, so readers still see
    nothing or the whole file, and no staging object is made, so writing a record needs only
    storage.objects.create and works in a bucket under a retention policy. An existing object is
    never replaced: per-run names (audit-<run id>.jsonl, ...) exist already only when an earlier
    attempt of this run's own bundle wrote them, with the same bytes, and the launcher refuses a
    --linkage_output that already holds tables (`records_present`). Returns `relpath`.
    """
    if "://" not in root:
        return write_atomically(root, relpath, data)
    final = output_path(root, relpath)
    if _listed(final):
        return relpath
    with (
        no_space_is_fatal(),
        FileSystems.create(final, mime_type="application/octet-stream", compression_type=RAW) as handle,
    ):
        handle.write(data)
    return relpath


def records_present(root: str, relpaths: Iterable[str]) -> list[str]:
    """Those of `relpaths` that already exist under an object-store ROOT (which `write_record` would
    not replace); [] for a local ROOT, where a re-run replaces its records."""
    if "://" not in root:
        return []
    return [relpath for relpath in relpaths if _listed(output_path(root, relpath))]


def read_staged(staging: str) -> bytes:
    with FileSystems.open(staging, compression_type=RAW) as handle:
        data: bytes = handle.read()
    return data


def discard_staged(staging: str) -> None:
    _discard(staging)


def publish_file(local_path: str, output_root: str, relpath: str) -> str:
    """Publish a local file to OUTPUT/relpath by the same protocol as `write_atomically`.

    A local OUTPUT gets the file moved into OUTPUT/.tmp/ (a rename on the same disk, else a copy;
    `local_path` is gone afterwards); a remote one gets it streamed there, one chunk in memory.
    """
    if "://" in output_root:
        with _stage(output_root) as (staging, handle), open(local_path, "rb") as src:
            shutil.copyfileobj(src, handle, READ_CHUNK)
    else:
        staging = _staging_path(output_root)
        try:
            with no_space_is_fatal():
                _ensure_parent(staging)
                shutil.move(local_path, staging)
        except BaseException:
            _discard(staging)
            raise
    _rename_into_place(staging, output_path(output_root, relpath))
    return relpath


def publish_object(source: str, output_root: str, relpath: str) -> str:
    """Publish an existing object (local or gs://; a held output under OUTPUT/review/) to
    OUTPUT/relpath by the same protocol: streamed into OUTPUT/.tmp/, renamed into place. The source
    is left as it is. Returns `relpath`."""
    with _stage(output_root) as (staging, handle), FileSystems.open(source, compression_type=RAW) as src:
        shutil.copyfileobj(src, handle, READ_CHUNK)
    _rename_into_place(staging, output_path(output_root, relpath))
    return relpath


def publish(
    local_root: str, relative_paths: Iterable[str], output: str, destinations: Iterable[str] | None = None
) -> None:
    """Publish each file under `local_root` to OUTPUT/<relative path> (`publish_file`).

    `destinations`: other relative paths under OUTPUT, one per file (quarantine).
    """
    sources = list(relative_paths)
    targets = list(destinations) if destinations is not None else sources
    for relative, target in zip(sources, targets, strict=True):
        publish_file(os.path.join(local_root, relative), output, target)


# -- scratch storage for tile pixels -----------------------------------------------------------------


def scratch_root(scratch_location: str | None, run_id: str) -> str:
    """The scratch directory of one pipeline: --scratch_location (or the system temp) / wsi-<run id>."""
    base = scratch_location or os.path.join(tempfile.gettempdir(), "deid-wsi-scratch")
    return FileSystems.join(base, f"wsi-{run_id}") if "://" in base else os.path.join(base, f"wsi-{run_id}")


def run_scratch_location(scratch_location: str | None, run_id: str) -> str:
    """A local run's own scratch base (--scratch_location or the system temp / run-<run id>), which
    the launcher removes when the run ends, whatever happened."""
    base = scratch_location or os.path.join(tempfile.gettempdir(), "deid-wsi-scratch")
    return FileSystems.join(base, f"run-{run_id}") if "://" in base else os.path.join(base, f"run-{run_id}")


_SEQUENCE = itertools.count()


class LocalScratch:
    """Files under a local directory (shared by all workers of one machine)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._dirs: set[str] = set()

    def _path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError("scratch names are relative")
        return os.path.join(self.root, name)

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        directory = os.path.dirname(path)
        if directory not in self._dirs:
            with no_space_is_fatal():
                os.makedirs(directory, exist_ok=True)
            self._dirs.add(directory)
        # A unique temporary name without mkstemp's exclusive-create retries (slow on overlay disks);
        # the rename makes the file appear whole.
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}-{next(_SEQUENCE)}.tmp"
        try:
            with no_space_is_fatal():
                try:
                    with open(tmp, "wb") as handle:
                        handle.write(data)
                except FileNotFoundError:  # the directory was removed (slide cleaned up, then retried)
                    self._dirs.discard(directory)
                    os.makedirs(directory, exist_ok=True)
                    with open(tmp, "wb") as handle:
                        handle.write(data)
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # never leave a partial (often empty) .tmp behind
                os.remove(tmp)
            raise

    def get(self, name: str) -> bytes:
        with open(self._path(name), "rb") as handle:
            return handle.read()

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path(name))

    def delete_prefix(self, prefix: str) -> None:
        target = self._path(prefix.rstrip("/"))
        self._dirs = {d for d in self._dirs if not (d == target or d.startswith(target + os.sep))}
        shutil.rmtree(target, ignore_errors=True)

    def local_path(self, name: str, directory: str) -> str:
        del directory  # already on a local disk
        return self._path(name)


class FileSystemsScratch:
    """Scratch on any Beam filesystem (gs:// on Dataflow, where workers share no local disk)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def put(self, name: str, data: bytes) -> None:
        with no_space_is_fatal(), FileSystems.create(self._path(name), compression_type=RAW) as handle:
            handle.write(data)

    def get(self, name: str) -> bytes:
        with FileSystems.open(self._path(name), compression_type=RAW) as handle:
            return handle.read()

    def delete(self, name: str) -> None:
        with contextlib.suppress(Exception):  # a leftover scratch file is harmless
            FileSystems.delete([self._path(name)])

    def local_path(self, name: str, directory: str) -> str:
        """A copy in the local `directory`, streamed in READ_CHUNK pieces."""
        target = os.path.join(directory, name.replace("/", "_"))
        if not os.path.exists(target):
            with (
                no_space_is_fatal(),
                FileSystems.open(self._path(name), compression_type=RAW) as src,
                open(target, "wb") as dst,
            ):
                shutil.copyfileobj(src, dst, READ_CHUNK)
        return target

    def delete_prefix(self, prefix: str) -> None:
        pattern = f"{self._path(prefix.rstrip('/'))}/**"
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
            if matched:
                FileSystems.delete([m.path for m in matched])
        except (OSError, BeamIOError):
            pass  # best-effort cleanup of scratch: a leftover file must not fail a finished slide


def make_scratch(root: str) -> Scratch:
    return FileSystemsScratch(root) if "://" in root else LocalScratch(root)


# -- local copies of slides and open readers -----------------------------------------------------------


def localize(paths: tuple[str, ...], subtype: str) -> tuple[str, str | None]:
    """(local path OpenSlide can open, temporary directory to remove afterwards or None).

    Local single files are used in place. DICOM-WSI units get a directory of symlinks (or copies)
    holding only their own instances, so OpenSlide sees exactly one slide. A MIRAX unit (the .mrxs
    file, then its folder's files) always gets `slide.mrxs` beside `slide/<file name>` (links, or
    copies of remote objects), the layout OpenSlide needs: the folder named like the index file, an
    exact `.mrxs` suffix and `Slidedat.ini` spelling, and no input path in what OpenSlide opens.
    Other remote objects are copied with FileSystems; names keep only the extension (NDPI needs it).
    """
    remote = any("://" in path for path in paths)
    if not remote and len(paths) == 1 and subtype != "mrxs":
        return paths[0], None
    tmp = tempfile.mkdtemp(prefix="deid-wsi-")
    try:
        base = posixpath.dirname(paths[0])
        targets = []
        for index, path in enumerate(paths):
            if subtype == "dicom-wsi":
                name = f"{index:05d}.dcm"
            elif subtype == "mrxs":
                name = mirax_local_name(path, index)
            else:
                ext = os.path.splitext(path)[1].lower()[:8] if index == 0 else ""
                name = f"slide{ext}" if index == 0 else posixpath.relpath(path, base)
            target = os.path.join(tmp, name)
            if ".." in name.split("/"):
                raise InvalidInputError("a file of a slide unit lies outside its index file's directory")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if remote:
                with (
                    no_space_is_fatal(),
                    FileSystems.open(path, compression_type=RAW) as src,
                    open(target, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst, READ_CHUNK)
            else:
                os.symlink(os.path.abspath(path), target)
            targets.append(target)
        return targets[0], tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def mirax_local_name(path: str, index: int) -> str:
    """Where a MIRAX unit's file goes in its local copy: slide.mrxs, then slide/<its file name>."""
    if index == 0:
        return "slide.mrxs"
    name = posixpath.basename(path.replace("\\", "/"))
    return f"slide/{SLIDEDAT if name.casefold() == SLIDEDAT.casefold() else name}"


@contextlib.contextmanager
def localized(paths: tuple[str, ...], subtype: str) -> Iterator[str]:
    """`localize` as a context: the local copy (if one was made) is removed on exit."""
    path, tmp = localize(paths, subtype)
    try:
        yield path
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


class _Closable(Protocol):
    def close(self) -> None: ...


R = TypeVar("R", bound=_Closable)


class SlideReaders(Generic[R]):
    """A few open slides per DoFn instance, each on its `localize`d copy; `open_slide` opens one.

    The caller drops a reader after any error (OpenSlide errors latch).
    """

    def __init__(self, open_slide: Callable[[str], R], limit: int = 2) -> None:
        self._open_slide = open_slide
        self._limit = limit
        self._open: OrderedDict[str, tuple[R, str | None]] = OrderedDict()

    def get(self, key: str, paths: tuple[str, ...], subtype: str) -> R:
        entry = self._open.get(key)
        if entry is not None:
            self._open.move_to_end(key)
            return entry[0]
        path, tmp = localize(paths, subtype)
        try:
            reader = self._open_slide(path)
        except BaseException:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._open[key] = (reader, tmp)
        while len(self._open) > self._limit:
            self.drop(next(iter(self._open)))
        return reader

    def drop(self, key: str) -> None:
        entry = self._open.pop(key, None)
        if entry is not None:
            reader, tmp = entry
            reader.close()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def close_all(self) -> None:
        for key in list(self._open):
            self.drop(key)
