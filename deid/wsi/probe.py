"""Open a slide and read sample tiles in a fresh interpreter, so a native decoder crash is observed.

OpenSlide and libtiff are C code: a damaged slide can make them abort or segfault, which would take
the whole worker down. `probe_isolated` runs the same open-and-probe a worker is about to do in a
new process (spawned, never forked: forking a worker that hosts gRPC threads is unsafe) with a
timeout; a crash, hang or error there becomes an ordinary `DeidError` for the dead-letter output.
The child's stderr is discarded unread: native libraries may print file names or metadata.

Before it opens the slide, the child checks the declared size of every JPEG and JPEG 2000 tile and
strip against its page (`deid.wsi.units.check_tiff_units`: a hostile SOF claiming 65500 x 65500
pixels is `too_large` before any decoder runs; NDPI by `deid.wsi.ndpi`, MIRAX by
`deid.wsi.mirax.check_mirax`), and it runs under a memory cap: RLIMIT_AS is set to
`PROBE_MEMORY_LIMIT_BYTES` (2 GiB of address space; an ordinary probe peaks near 200 MiB) in the child
itself, so a decoder that still asks for more fails with MemoryError, reported as `too_large`,
instead of growing until the kernel kills the worker.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

from deid import errors
from deid.errors import DeidError, InputTooLargeError, SlideReadError
from deid.wsi.mirax import check_mirax
from deid.wsi.source import SlideReader, probe
from deid.wsi.units import check_tiff_units

PROBE_TIMEOUT_S = 300.0
# Address space of the probe child (RLIMIT_AS): imports and a probe of 512-pixel tiles take ~200 MiB.
PROBE_MEMORY_LIMIT_BYTES = 2 * 1024**3
_DEID_ERROR_EXIT = 3


def _error_class(error_kind: str) -> type[DeidError]:
    for cls in _subclasses(DeidError):
        if cls.error_kind == error_kind:
            return cls
    return SlideReadError


def _subclasses(cls: type[DeidError]) -> list[type[DeidError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def probe_isolated(
    path: str, tile: int, timeout_s: float = PROBE_TIMEOUT_S, memory_limit_bytes: int = PROBE_MEMORY_LIMIT_BYTES
) -> None:
    """Raise the DeidError the slide would raise (or SlideReadError on a crash or hang); else return."""
    command = [sys.executable, "-m", "deid.wsi.probe", path, str(tile), str(memory_limit_bytes)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise SlideReadError(
            f"reading sample tiles took longer than {timeout_s:.0f} s; the slide is damaged or its decoder hangs"
        ) from None
    if done.returncode == 0:
        return
    if done.returncode < 0:
        raise SlideReadError(
            f"the slide decoder crashed (signal {-done.returncode}) while reading sample tiles; "
            "the file is damaged or uses an encoding the decoder cannot handle"
        )
    if done.returncode == _DEID_ERROR_EXIT:
        try:
            report = json.loads(done.stdout.decode("utf-8"))
            raise _error_class(str(report["error_kind"]))(str(report["message"]))
        except (ValueError, KeyError, UnicodeDecodeError):
            pass
    raise SlideReadError(f"the slide probe failed (exit status {done.returncode}); the file may be damaged")


def limit_memory(limit_bytes: int) -> None:
    """Cap this process's address space (RLIMIT_AS, soft and hard) at `limit_bytes`, or lower if already lower."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def _main(argv: list[str]) -> int:
    path, tile = argv[0], int(argv[1])
    limit = int(argv[2]) if len(argv) > 2 else PROBE_MEMORY_LIMIT_BYTES
    limit_memory(limit)
    try:
        try:
            check_tiff_units(path)
            check_mirax(path)
            reader = SlideReader(path)
            try:
                probe(reader, tile)
            finally:
                reader.close()
        except MemoryError:
            raise InputTooLargeError(
                f"reading sample tiles needed more than the probe's {limit}-byte memory cap; the slide is "
                "damaged or hostile (decompression bomb)"
            ) from None
    except DeidError as exc:
        sys.stdout.write(json.dumps({"error_kind": exc.error_kind, "message": str(exc)}))
        return _DEID_ERROR_EXIT
    return 0


assert errors  # the hierarchy must be imported for _error_class to see every subclass

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
