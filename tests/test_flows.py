"""Prefect flows over the runner, on a local Dask cluster, with Prefect's temporary server."""

import pytest
from conftest import tiny_pipeline_plan


@pytest.fixture(autouse=True)
def _stop_temporary_servers():
    """Stop Prefect's temporary server while pytest still owns the log streams
    (Prefect otherwise logs its shutdown at exit into a closed stream)."""
    yield
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()


@pytest.mark.slow
def test_dataset_flow_on_two_dask_workers_then_all_cache_hits(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # offline: Prefect's temporary local server
    monkeypatch.setenv("PREFECT_LOGGING_TO_API_ENABLED", "false")  # no log shipping after the server stops
    from ovlift.flows import run_dataset_flow, scene_flow

    path = tiny_pipeline_plan(tmp_path / "plan.yaml", epochs=1, num_scenes=4)
    first = run_dataset_flow(str(path), workers=2)
    per_scene = ["input", "extract2d/t", "project", "predict"]
    assert first.counts() == {"ran": 4 * len(per_scene) + 2}  # + distill and evaluate, once each
    assert {(o.scene_id, o.stage) for o in first.outcomes if o.scene_id == "global"} == {
        ("global", "distill"),
        ("global", "evaluate"),
    }
    assert sorted({o.scene_id for o in first.outcomes} - {"global"}) == [f"toy_{i:04d}" for i in range(4)]
    second = run_dataset_flow(str(path), workers=2)
    assert second.counts() == {"cached": 4 * len(per_scene) + 2}
    outcomes = scene_flow(str(path), "toy_0002", force=["project"])
    assert [(o["stage"], o["status"]) for o in outcomes] == [
        ("input", "cached"),
        ("extract2d/t", "cached"),
        ("project", "ran"),
        ("predict", "ran"),
    ]


@pytest.mark.slow
def test_gpu_stages_run_on_the_gpu_worker_and_the_run_table_is_an_artifact(tmp_path, monkeypatch):
    """Two workers, one declaring GPU=1: every stage that computes on its device goes there
    (run on the CPU here: ``gpu_if_on_device``); the CPU stages use both workers."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_LOGGING_TO_API_ENABLED", "false")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from ovlift.flows import artifact_key, local_cluster, run_dataset_flow
    from ovlift.pipeline.plan import load_plan

    path = tiny_pipeline_plan(tmp_path / "plan.yaml", epochs=1, num_scenes=4)
    plan = load_plan(path)
    with local_cluster(n_workers=2, gpus=1) as cluster:
        report = run_dataset_flow(str(path), dask_address=cluster.scheduler_address, gpu_if_on_device=True)
    assert report.counts() == {"ran": 4 * 4 + 2}
    gpu = {o.stage for o in report.outcomes if plan.stages[o.stage].stage.resources(plan.device, True).gpu}
    assert gpu == {"extract2d/t", "project", "distill", "predict"}
    assert {o.worker for o in report.outcomes if o.stage in gpu} == {"worker-0"}
    assert {o.worker for o in report.outcomes if o.stage == "input"} == {"worker-0", "worker-1"}

    with get_client(sync_client=True) as client:
        key = ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(str(path))]))
        (artifact,) = client.read_latest_artifacts(artifact_filter=key)
    assert "| scene | input | extract2d/t | project | distill | predict | evaluate |" in artifact.data
    assert "| toy_0003 | ran | ran | ran |  | ran |  |" in artifact.data  # held out: no training stages
    assert "| global |  |  |  | ran |  | ran |" in artifact.data
    assert "## evaluate" in artifact.data and "mIoU" in artifact.data
