"""What the event mode is told or finds: notices of new objects and DICOM instances.

Two sources name inputs (README "Event-driven mode"):

- Pub/Sub messages (`--input_subscription`): a Cloud Storage notification (attributes `eventType`,
  `bucketId`, `objectId`, `objectGeneration`; only OBJECT_FINALIZE names a new object) becomes an
  `ObjectNotice`; a Cloud Healthcare DICOM store notification (the message data is the instance's
  resource name, `projects/.../dicomStores/S/dicomWeb/studies/A/series/B/instances/C`) becomes an
  `InstanceNotice`; anything else a `BadNotice` (dead-lettered `invalid_notification`).
- Polling a local directory or gs:// prefix (`--watch`): every listed file is an `ObjectNotice`
  carrying its size and modification time, noticed again whenever they change (`WatchedFiles`).

`unit_key` says which notices belong to one unit (a MIRAX slide's `.mrxs` file and the files of its
folder; every other object alone); the unit is taken once it settled (transforms/events.py).
Notices hold paths and UIDs, so none of them shows a field in its repr (Beam logs elements at DEBUG).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from apache_beam.io.filesystems import FileSystems

from deid.cloud.dicomweb import InstanceKey
from deid.wsi.mirax import is_mrxs_name, is_slidedat_name, unit_folder
from transforms.listing import walk_local

FINALIZE = "OBJECT_FINALIZE"
_INSTANCE_RE = re.compile(
    r"(?P<store>projects/[^/]+/locations/[^/]+/datasets/[^/]+/dicomStores/[^/]+)"
    r"/dicomWeb/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)/instances/(?P<sop>[^/]+)"
)
_MIRAX_DATA_RE = re.compile(r"(?i)^(index|data\d+)\.dat$")
# A unit key of a MIRAX slide: the path of its folder and this suffix (the .mrxs file's case varies).
MIRAX_UNIT = "\0mrxs"


@dataclass(frozen=True)
class ObjectNotice:
    """An object (gs://...) or local file seen or announced at `noticed_at` (seconds since the epoch).

    `watched`: found by polling, so it may still be written: it is taken only while its size and
    modification time (`size`, `version` = mtime in ns) are still those noticed. A notification's
    object is complete (OBJECT_FINALIZE); `version` is then its generation.
    """

    path: str = field(repr=False)
    noticed_at: float
    size: int = field(default=-1, repr=False)
    version: str = field(default="", repr=False)
    watched: bool = False


@dataclass(frozen=True)
class InstanceNotice:
    """A DICOM instance a DICOM store announced: fetched by WADO-RS from `store`'s DICOMweb endpoint."""

    store: str = field(repr=False)
    key: InstanceKey = field(repr=False)
    noticed_at: float = 0.0


@dataclass(frozen=True)
class BadNotice:
    """A message that names nothing this job can take; `digest_of` (the message data, never shown)
    is hashed with the run key into its dead letter's input_sha256."""

    digest_of: str = field(repr=False)
    reason: str = ""
    noticed_at: float = 0.0


@dataclass(frozen=True)
class Ignored:
    """A notification this job leaves alone on purpose (another event type, another store, an object
    outside --input or under OUTPUT); `why` names the counter, never the object."""

    why: str


Notice = ObjectNotice | InstanceNotice | BadNotice


def parse_message(data: bytes, attributes: Mapping[str, str], noticed_at: float) -> Notice | Ignored:
    """One Pub/Sub message (data and attributes) -> what it names."""
    if "bucketId" in attributes or "eventType" in attributes:
        if attributes.get("eventType") != FINALIZE:
            return Ignored("event_type")
        bucket, name = attributes.get("bucketId", ""), attributes.get("objectId", "")
        if not bucket or not name:
            reason = "a Cloud Storage notification without bucketId or objectId"
            return BadNotice(_text(data) + repr(sorted(attributes.items())), reason, noticed_at)
        return ObjectNotice(
            path=f"gs://{bucket}/{name}",
            noticed_at=noticed_at,
            size=_payload_size(data),
            version=attributes.get("objectGeneration", ""),
        )
    text = _text(data).strip()
    match = _INSTANCE_RE.fullmatch(text)
    if match:
        key = InstanceKey(match["study"], match["series"], match["sop"])
        return InstanceNotice(store=match["store"], key=key, noticed_at=noticed_at)
    return BadNotice(
        text or repr(sorted(attributes.items())),
        "the message is neither a Cloud Storage notification (bucketId, objectId) nor a DICOM store "
        "notification (an instance's resource name)",
        noticed_at,
    )


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _payload_size(data: bytes) -> int:
    """The object size a JSON_API_V1 payload states, or -1."""
    try:
        body = json.loads(data)
        return int(body.get("size", -1)) if isinstance(body, dict) else -1
    except (ValueError, TypeError):
        return -1


def is_mirax_member_name(name: str) -> bool:
    """A file name MIRAX folders hold (Slidedat.ini, Index.dat, DataNNNN.dat)."""
    return is_slidedat_name(name) or bool(_MIRAX_DATA_RE.match(name))


def unit_key(path: str, exists: Callable[[str], bool]) -> str:
    """Notices with the same key form one unit: a `.mrxs` file and the files of its folder (named like
    MIRAX files, or in a folder whose `.mrxs` file exists) share their folder's key; any other
    object is a unit of its own. DICOM-WSI series are grouped later, once their headers are read."""
    if is_mrxs_name(path):
        return unit_folder(path) + MIRAX_UNIT
    folder = posixpath.dirname(path)
    if folder and (
        is_mirax_member_name(posixpath.basename(path)) or any(exists(folder + s) for s in (".mrxs", ".MRXS"))
    ):
        return folder + MIRAX_UNIT
    return path


def mirax_index(key: str, notices: Iterable[ObjectNotice], exists: Callable[[str], bool]) -> str | None:
    """The `.mrxs` file of a MIRAX unit key: a noticed one, else one that exists; None without."""
    folder = key[: -len(MIRAX_UNIT)]
    for notice in notices:
        if is_mrxs_name(notice.path):
            return notice.path
    return next((folder + s for s in (".mrxs", ".MRXS") if exists(folder + s)), None)


# -- polling a directory or prefix (--watch) --------------------------------------------------------


def poll_files(pattern: str, skip: Callable[[str], bool]) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of every file matching `pattern` that `skip` does not exclude.

    Local patterns are walked with the batch listing's `walk_local` (same files, same patterns);
    gs:// patterns are matched with Beam's FileSystems. A directory that cannot be listed, or a file
    that vanished between listing and stat, is left out of this poll.
    """
    if "://" in pattern:
        metadata = FileSystems.match([pattern])[0].metadata_list
        return [
            (m.path, int(m.size_in_bytes), int((m.last_updated_in_seconds or 0) * 1e9))
            for m in metadata
            if not skip(m.path)
        ]
    found = []
    for path, listed in walk_local(pattern, skip):
        if not listed:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.append((path, st.st_size, st.st_mtime_ns))
    return found


def current_version(path: str) -> tuple[int, str] | None:
    """(size, mtime in ns as text) of a file now, or None if it is gone."""
    if "://" in path:
        try:
            metadata = FileSystems.match([path])[0].metadata_list
        except Exception:  # noqa: BLE001 - a vanished object is simply not taken
            return None
        match = next((m for m in metadata if m.path == path), None)
        if match is None:
            return None
        return int(match.size_in_bytes), str(int((match.last_updated_in_seconds or 0) * 1e9))
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, str(st.st_mtime_ns)


def path_exists(path: str) -> bool:
    if "://" not in path:
        return os.path.lexists(path)
    try:
        return bool(FileSystems.exists(path))
    except Exception:  # noqa: BLE001 - an unreachable object counts as absent
        return False
