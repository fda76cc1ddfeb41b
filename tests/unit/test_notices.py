"""transforms/notices.py: what a Pub/Sub message names, and which notices form one unit."""

from __future__ import annotations

import json

from deid.cloud.dicomweb import InstanceKey
from transforms.notices import (
    MIRAX_UNIT,
    BadNotice,
    Ignored,
    InstanceNotice,
    ObjectNotice,
    mirax_index,
    parse_message,
    unit_key,
)

STORE = "projects/p/locations/l/datasets/d/dicomStores/source"


def _gcs(event: str = "OBJECT_FINALIZE", **extra: str) -> dict[str, str]:
    return {"eventType": event, "bucketId": "b", "objectId": "in/a b.dcm", "objectGeneration": "7", **extra}


def test_a_finalized_object_is_an_object_notice() -> None:
    notice = parse_message(json.dumps({"size": "123"}).encode(), _gcs(), 5.0)
    assert notice == ObjectNotice(path="gs://b/in/a b.dcm", noticed_at=5.0, size=123, version="7")
    assert "a b.dcm" not in repr(notice)


def test_other_events_are_ignored_and_incomplete_notifications_are_bad() -> None:
    assert parse_message(b"{}", _gcs("OBJECT_DELETE"), 0.0) == Ignored("event_type")
    assert isinstance(parse_message(b"{}", {"eventType": "OBJECT_FINALIZE", "bucketId": "b"}, 0.0), BadNotice)


def test_a_dicom_store_notification_names_one_instance() -> None:
    data = f"{STORE}/dicomWeb/studies/1.2/series/1.2.3/instances/1.2.3.4".encode()
    notice = parse_message(data, {"action": "StoreInstances"}, 1.0)
    assert notice == InstanceNotice(store=STORE, key=InstanceKey("1.2", "1.2.3", "1.2.3.4"), noticed_at=1.0)
    assert "1.2.3.4" not in repr(notice)


def test_a_message_that_names_nothing_is_bad_and_hides_its_text() -> None:
    notice = parse_message(b"Jane Doe's scan", {}, 2.0)
    assert isinstance(notice, BadNotice) and notice.digest_of == "Jane Doe's scan"
    assert "Jane" not in repr(notice) and "neither" in notice.reason


def test_mirax_files_share_their_slides_unit_and_other_files_stand_alone() -> None:
    def nothing(_: str) -> bool:
        return False

    key = "gs://b/in/slide" + MIRAX_UNIT
    assert unit_key("gs://b/in/slide.mrxs", nothing) == key
    assert unit_key("gs://b/in/slide.MRXS", nothing) == key
    assert unit_key("gs://b/in/slide/Slidedat.ini", nothing) == key
    assert unit_key("gs://b/in/slide/Data0003.dat", nothing) == key
    assert unit_key("gs://b/in/slide/other.bin", nothing) == "gs://b/in/slide/other.bin"
    assert unit_key("gs://b/in/slide/other.bin", lambda p: p == "gs://b/in/slide.mrxs") == key
    assert unit_key("gs://b/in/a.dcm", nothing) == "gs://b/in/a.dcm"


def test_a_mirax_unit_is_taken_by_its_mrxs_file() -> None:
    key = "/in/slide" + MIRAX_UNIT
    members = [ObjectNotice("/in/slide/Index.dat", 1.0), ObjectNotice("/in/slide.mrxs", 2.0)]
    assert mirax_index(key, members, lambda _: False) == "/in/slide.mrxs"
    assert mirax_index(key, members[:1], lambda p: p == "/in/slide.MRXS") == "/in/slide.MRXS"
    assert mirax_index(key, members[:1], lambda _: False) is None
