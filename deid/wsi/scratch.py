"""Scratch storage for tile pixels between pipeline stages.

Elements carry names; pixels live here. `LocalScratch` writes worker-local files; the Beam layer
provides an implementation over `FileSystems` for gs:// scratch on Dataflow. Names are built from a
keyed slide id and tile coordinates only, never from input names.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
from typing import Protocol

import numpy as np


class Scratch(Protocol):
    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def delete(self, name: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...


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
            os.makedirs(directory, exist_ok=True)
            self._dirs.add(directory)
        # A unique temporary name without mkstemp's exclusive-create retries (slow on overlay disks);
        # the rename makes the file appear whole.
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}-{next(_SEQUENCE)}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
        except FileNotFoundError:  # the directory was removed (slide cleaned up, then retried)
            self._dirs.discard(directory)
            os.makedirs(directory, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
        os.replace(tmp, path)

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


def pack_pixels(array: np.ndarray) -> bytes:
    """HxWx3 uint8 -> bytes: a 12-byte shape header, then the raw samples (compression cost more
    time than the disk it saved; scratch files are deleted as soon as their parent is built)."""
    h, w, c = array.shape
    header = np.asarray([h, w, c], dtype="<u4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()


def unpack_pixels(data: bytes) -> np.ndarray:
    h, w, c = (int(v) for v in np.frombuffer(data[:12], dtype="<u4"))
    return np.frombuffer(data, dtype=np.uint8, offset=12).reshape(h, w, c)
