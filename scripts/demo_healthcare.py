"""`make demo-healthcare`: the demo inputs through the Healthcare API branch, against the local stand-in.

Starts `python -m devtools.fake_healthcare` on a 127.0.0.1 port with a source and a destination
DICOM store, gives google-auth a throwaway service-account file whose token endpoint is that
server, runs the pipeline with --healthcare_* options, prints the summary and how many instances
the destination store holds, and stops the server by its PID. The stand-in runs this project's own
de-identifier, not Google's (devtools/README.md says what it does and does not reproduce).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DATASET = "projects/demo/locations/local/datasets/demo"
SOURCE, DESTINATION = f"{DATASET}/dicomStores/source", f"{DATASET}/dicomStores/destination"


def main(demo_data: str, output: str) -> int:
    from deid.cloud.dicomweb import list_instances
    from deid.cloud.healthcare import HealthcareClient, default_session
    from pipeline.main import main as run_pipeline
    from tests.support.gcs_emulator import fake_healthcare, throwaway_credentials

    with tempfile.TemporaryDirectory() as scratch, fake_healthcare([SOURCE, DESTINATION]) as server:
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(
            throwaway_credentials(Path(scratch) / "throwaway-sa.json", server.token_uri)
        )
        status = run_pipeline(
            [
                f"--input={demo_data}/input",
                f"--output={output}",
                f"--deid_key_file={demo_data}/demo.key",
                f"--healthcare_source_store={SOURCE}",
                f"--healthcare_destination_store={DESTINATION}",
                f"--healthcare_api_endpoint={server.api}",
            ]
        )
        client = HealthcareClient(server.api, default_session())
        stored = list_instances(client.dicomweb(DESTINATION))
        print(
            f"destination store {DESTINATION}: {len(stored)} de-identified instances (local stand-in at {server.url})"
        )
    return status


if __name__ == "__main__":
    sys.exit(
        main(
            sys.argv[1] if len(sys.argv) > 1 else "demo_data",
            sys.argv[2] if len(sys.argv) > 2 else "demo_out_healthcare",
        )
    )
