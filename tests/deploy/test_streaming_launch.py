"""templates/run.sh launching and updating the streaming job (README "Event-driven mode")."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.test_deployment import run_script

SUBSCRIPTIONS = "projects/p/subscriptions/deid-uploads,projects/p/subscriptions/deid-dicom-instances"


def test_run_sh_launches_and_updates_the_streaming_job(tmp_path: Path) -> None:
    args = [f"input_subscription={SUBSCRIPTIONS}", "input=gs://in/", "settle_seconds=60"]
    code, stderr, calls = run_script(tmp_path, "run.sh", args, OUTPUT_BUCKET="o", JOB_NAME="deid-events")
    assert code == 0, stderr
    parameters = next(arg for arg in calls[0] if arg.startswith("--parameters="))
    assert f"input_subscription={SUBSCRIPTIONS}~" in parameters  # the comma survives gcloud's delimiter
    assert "--update" not in calls[0]
    code, stderr, calls = run_script(tmp_path, "run.sh", args, OUTPUT_BUCKET="o", JOB_NAME="deid-events", UPDATE="1")
    assert code == 0, stderr
    assert calls[-1][:4] == ["dataflow", "flex-template", "run", "deid-events"] and calls[-1][-1] == "--update"
