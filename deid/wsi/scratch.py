"""Scratch storage for tile pixels between pipeline stages: the protocol and the pixel format.

Elements carry names; pixels live here. The implementations (worker-local files, Beam
`FileSystems` for gs:// scratch on Dataflow) are in `transforms.files`. Names are built from a
keyed slide id and tile coordinates only, never from input names.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Scratch(Protocol):
    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def delete(self, name: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...


def pack_pixels(array: np.ndarray) -> bytes:
    """HxWx3 uint8 -> bytes: a 12-byte shape header, then the raw samples (compression cost more
    time than the disk it saved; scratch files are deleted as soon as their parent is built)."""
    h, w, c = array.shape
    header = np.asarray([h, w, c], dtype="<u4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()


def unpack_pixels(data: bytes) -> np.ndarray:
    h, w, c = (int(v) for v in np.frombuffer(data[:12], dtype="<u4"))
    return np.frombuffer(data, dtype=np.uint8, offset=12).reshape(h, w, c)
