"""Files of the slide branch, on transforms/files.py's rules: scratch storage for the pyramid's
band edges (`LocalScratch`, `FileSystemsScratch`, `make_scratch`, one directory per run), local
copies of slides for OpenSlide (`localize`, `localized`; a MIRAX slide as its .mrxs and folder) and
the per-worker cache of open slides (`SlideReaders`). Every write turns a full disk into
`OutOfSpaceError` (`no_space_is_fatal`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import posixpath
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from deid.errors import InvalidInputError
from deid.wsi.mirax import SLIDEDAT
from deid.wsi.scratch import Scratch
from transforms.files import RAW, READ_CHUNK, no_space_is_fatal


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
