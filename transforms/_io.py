"""File access through Beam's filesystems (local paths and gs:// alike), with atomic writes."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from deid.errors import InputTooLargeError

READ_CHUNK = 8 * 1024 * 1024
TMP_DIR = ".tmp"
# Never let Beam guess compression from a name: inputs are classified by content, not extension.
RAW = CompressionTypes.UNCOMPRESSED


def output_path(output_root: str, relpath: str) -> str:
    return FileSystems.join(output_root, *relpath.split("/"))


def write_atomically(output_root: str, relpath: str, data: bytes) -> str:
    """Write `data` to OUTPUT/relpath so that readers see either nothing or the whole file.

    The bytes go to OUTPUT/.tmp/ first and are renamed into place: on a local disk the rename is
    atomic; on GCS a rename is a copy then delete, and the copy appears whole. Returns `relpath`.
    """
    final = output_path(output_root, relpath)
    staging = FileSystems.join(output_root, TMP_DIR, f"{uuid.uuid4().hex}.part")
    with FileSystems.create(staging, mime_type="application/octet-stream", compression_type=RAW) as handle:
        handle.write(data)
    _ensure_parent(final)
    # A re-run with the same key writes the same name: the rename replaces it (os.rename on a
    # local disk, copy-then-delete on GCS), so readers never see the name missing.
    FileSystems.rename([staging], [final])
    return relpath


def _ensure_parent(path: str) -> None:
    if "://" in path:
        return  # object stores have no directories
    parent = os.path.dirname(path)
    if parent:
        # exist_ok: workers write into the same series directory at the same time. Not cached: the
        # directory may be removed between two runs in one process.
        os.makedirs(parent, exist_ok=True)


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
