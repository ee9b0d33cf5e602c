"""Scheduling: a real Prefect server on the loopback, a toy plan served from a process and
deployed to a process work pool, runs triggered through the client."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_pipeline_plan

OVLIFT = str(Path(sys.executable).with_name("ovlift"))
PREFECT = str(Path(sys.executable).with_name("prefect"))


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A Prefect server of its own (temporary PREFECT_HOME), its URL in the environment of
    this process and of every process the test starts."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "1")  # serve: look for runs every second
    monkeypatch.setenv("PREFECT_WORKER_QUERY_SECONDS", "1")
    monkeypatch.setenv("OVLIFT_DASK_WORKERS", "1")  # each flow run's own local cluster
    monkeypatch.setenv("OVLIFT_LOG_DIR", str(tmp_path / "logs"))
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    srv = SubprocessASGIServer()
    srv.start(timeout=120)
    monkeypatch.setenv("PREFECT_API_URL", srv.api_url)
    try:
        with temporary_settings({PREFECT_API_URL: srv.api_url}):
            yield srv.api_url
    finally:
        srv.stop()


def start(tmp_path, name, *cmd):
    log = (tmp_path / f"{name}.log").open("w")
    return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def stop(proc):
    proc.send_signal(signal.SIGINT)  # both stop cleanly on SIGINT
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for_deployment(client, name, proc, log):
    import time

    from prefect.exceptions import ObjectNotFound

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.5)
    raise AssertionError(f"{name} was not registered in 120 s: {log.read_text()}")


def trigger(name, client):
    """Run the deployment through the client; its state and its run-table artifact."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType, FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    run = run_deployment(name, timeout=600, poll_interval=1)
    arts = client.read_artifacts(
        artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["markdown"])),
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
    )
    return run.state, [a.description for a in arts]


@pytest.mark.slow
def test_served_and_pool_deployments_run_from_the_client_and_rerun_as_cache_hits(tmp_path, server):
    from prefect.client.orchestration import get_client

    plan = tiny_pipeline_plan(tmp_path / "plan.yaml", epochs=1, num_scenes=3)
    stages = 3 * 4 + 2  # input, extract2d, project, predict per scene; distill, evaluate
    served = start(tmp_path, "serve", OVLIFT, "serve", str(plan), "--name", "toy-served", "--cron", "0 2 * * *")
    try:
        with get_client(sync_client=True) as client:
            deployment = wait_for_deployment(client, "ovlift-dataset/toy-served", served, tmp_path / "serve.log")
            assert deployment.parameters["plan_path"] == str(plan.resolve())
            assert deployment.schedules[0].schedule.cron == "0 2 * * *"
            state, summaries = trigger("ovlift-dataset/toy-served", client)
            assert state.is_completed(), (tmp_path / "serve.log").read_text()
            assert len(summaries) == 1 and f": {stages} ran, 0 cached, 0 failed, 0 skipped" in summaries[0]
            state, summaries = trigger("ovlift-dataset/toy-served", client)
            assert state.is_completed() and f"0 ran, {stages} cached" in summaries[0]
    finally:
        stop(served)

    subprocess.run([PREFECT, "work-pool", "create", "toy-pool", "--type", "process"], check=True, capture_output=True)
    deployed = subprocess.run(
        [OVLIFT, "deploy", str(plan), "--name", "toy-pooled", "--work-pool", "toy-pool"], capture_output=True, text=True
    )
    assert deployed.returncode == 0 and "on work pool 'toy-pool'" in " ".join(deployed.stdout.split()), deployed.stderr
    worker = start(tmp_path, "worker", PREFECT, "worker", "start", "--pool", "toy-pool")
    try:
        with get_client(sync_client=True) as client:
            assert client.read_deployment_by_name("ovlift-dataset/toy-pooled").work_pool_name == "toy-pool"
            state, summaries = trigger("ovlift-dataset/toy-pooled", client)
            assert state.is_completed(), (tmp_path / "worker.log").read_text()
            assert f"0 ran, {stages} cached" in summaries[0]  # the same store: all cache hits
    finally:
        stop(worker)


@pytest.mark.slow
def test_the_committed_prefect_yaml_deploys(tmp_path, server):
    """``prefect deploy --all`` takes the committed example: its deployment, schedule and pull step."""
    from conftest import REPO
    from prefect.client.orchestration import get_client

    subprocess.run([PREFECT, "work-pool", "create", "ovlift", "--type", "process"], check=True, capture_output=True)
    env = dict(os.environ, OVLIFT_REPO=str(REPO))
    done = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("ovlift-dataset/demo-nightly")
    assert deployment.parameters == {"plan_path": "plans/demo.yaml"} and deployment.work_pool_name == "ovlift"
    assert deployment.schedules[0].schedule.cron == "0 2 * * *"
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
