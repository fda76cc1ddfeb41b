"""Every file the pipeline touches, through Beam's filesystems (local paths and gs:// alike).

Reading inputs (`read_all`, `iter_chunks`, `sha256_and_head`, `open_input`); publishing outputs
under OUTPUT atomically (`write_atomically` for bytes, `publish_file` and `publish` for local files
such as a pyramid larger than memory), all by one protocol, `_stage` then `_rename_into_place`;
record files, which are only ever added (`write_record`: on an object store uploaded straight to
their name and never replacing an object, so writing one needs no right to read or delete). Scratch
storage and local copies of slides are `transforms.slide_files`, on the same rules.

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
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from deid.errors import InputTooLargeError, OutOfSpaceError

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
