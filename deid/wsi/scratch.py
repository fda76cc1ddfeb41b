"""Scratch storage between pipeline stages: the protocol and the pixel format.

Elements carry names; bytes live here: one batch file per pyramid block (`deid.wsi.blocks`), and
the label and macro kept. The implementations (worker-local files, Beam `FileSystems` for gs://
scratch on Dataflow) are in `transforms.slide_files`. Names are built from a keyed slide id and tile
coordinates only, never from input names.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Scratch(Protocol):
    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def delete(self, name: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...

    def local_path(self, name: str, directory: str) -> str:
        """A local file holding object `name`: its own path on a local disk, else a copy in `directory`."""
        ...


def pack_pixels(array: np.ndarray) -> bytes:
    """HxWx3 uint8 -> bytes: a 12-byte shape header, then the raw samples."""
    h, w, c = array.shape
    header = np.asarray([h, w, c], dtype="<u4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()


def unpack_pixels(data: bytes) -> np.ndarray:
    h, w, c = (int(v) for v in np.frombuffer(data[:12], dtype="<u4"))
    return np.frombuffer(data, dtype=np.uint8, offset=12).reshape(h, w, c)
