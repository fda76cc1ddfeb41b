"""A MIRAX slide under `--input gs://...`: listed as one unit, its .mrxs and folder localised together for OpenSlide."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deid.keys import DeidKey
from tests.support import mirax_factory
from tests.support.gcs_emulator import CloudEnv, cloud_env


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudEnv]:
    with cloud_env(tmp_path_factory.mktemp("cloud")) as env:
        yield env


def test_gs_mirax_is_one_slide(cloud: CloudEnv, tmp_path: Path) -> None:
    openslide = pytest.importorskip("openslide")
    from pipeline.main import run

    local = tmp_path / "slide"
    mrxs = mirax_factory.write_mirax(local, "ZQXGCS-case")
    bucket = "mrx-" + uuid.uuid4().hex[:8]
    cloud.create_bucket(bucket)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        cloud.upload(f"gs://{bucket}/in/{path.relative_to(local).as_posix()}", path.read_bytes())
    key_file = tmp_path / "deid.key"
    key_file.write_bytes(DeidKey.generate().secret)

    run(["--runner=FnApiRunner", f"--input=gs://{bucket}/in/", f"--output=gs://{bucket}/out/",
         f"--deid_key_file={key_file}"])

    objects = cloud.list(f"gs://{bucket}/out/")
    audit = [json.loads(line) for path, data in objects.items() if "/audit" in path
             for line in data.decode().splitlines() if line.strip()]
    assert [(r["status"], r["input_sha256"]) for r in audit] == [("ok", hashlib.sha256(mrxs.read_bytes()).hexdigest())]
    (slide,) = [data for path, data in objects.items() if "/out/wsi/" in path]
    copy = tmp_path / "out.svs"
    copy.write_bytes(slide)
    result = openslide.OpenSlide(str(copy))
    assert result.dimensions == (992, 992)
    everything = b"".join(objects.values())
    for value in (*mirax_factory.MIRAX_VALUES.values(), "ZQXGCS-case"):
        assert value.encode() not in everything
