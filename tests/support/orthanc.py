"""Start a throwaway Orthanc (Debian packages orthanc + orthanc-dicomweb) for DICOMweb tests.

Orthanc cannot bind to loopback only, so it runs with RemoteAccessAllowed false, its HTTP and DICOM
ports on free 127.0.0.1 ports, storage and index in a temporary directory, no authentication, and is
stopped by its PID. Tests skip cleanly when Orthanc or the DICOMweb plugin is not installed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.gcs_emulator import free_port, stop, wait_http

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@dataclass
class OrthancServer:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"


def skip_unless_installed() -> None:
    if not Path(ORTHANC).exists():
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    if not DICOMWEB_PLUGIN.exists():
        pytest.skip("the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")


@contextlib.contextmanager
def orthanc(workdir: Path, name: str = "orthanc") -> Iterator[OrthancServer]:
    skip_unless_installed()
    root = workdir / name
    (root / "db").mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": name,
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpsVerifyPeers": False,
        "DicomServerEnabled": False,
    }
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (root / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_http(url + "/system", timeout_s=60, process=process)
        yield OrthancServer(url, process)
    finally:
        stop(process)
        log.close()
