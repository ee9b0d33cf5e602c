"""Prefect flows over the runner, on a local Dask cluster, with Prefect's temporary server."""

import pytest
import yaml

from conftest import toy_plan_dict


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

    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(toy_plan_dict(tmp_path / "s.zarr", num_scenes=4)))
    first = run_dataset_flow(str(path), workers=2)
    assert first.counts() == {"ran": 4}
    assert sorted(o.scene_id for o in first.outcomes) == [f"toy_{i:04d}" for i in range(4)]
    second = run_dataset_flow(str(path), workers=2)
    assert second.counts() == {"cached": 4}
    outcomes = scene_flow(str(path), "toy_0002", force=["input"])
    assert [(o["stage"], o["status"]) for o in outcomes] == [("input", "ran")]
