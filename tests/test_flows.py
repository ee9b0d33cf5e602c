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


def test_the_local_cluster_listens_on_the_loopback_only():
    """Scheduler, dashboard and worker of ``local_cluster`` bind 127.0.0.1: Dask's own dashboard
    default (``:0``) binds every interface, and the cluster runs whatever a client sends it."""
    import distributed

    from ovlift.flows import local_cluster

    def bound(node) -> list[str]:
        """The hosts a node's HTTP server (dashboard, metrics) and comm listener are bound to."""
        http = {s.getsockname()[0] for s in node.http_server._sockets.values()}
        return sorted(http | {distributed.comm.get_address_host(node.address)})

    with local_cluster(n_workers=1) as cluster, distributed.Client(cluster) as client:
        assert bound(cluster.scheduler) == ["127.0.0.1"]
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        assert list(client.run(lambda dask_worker: bound(dask_worker)).values()) == [["127.0.0.1"]]
        assert [distributed.comm.get_address_host(n.address) for n in cluster.workers.values()] == ["127.0.0.1"]


def test_listening_beyond_the_loopback_is_asked_for_and_warned_about(caplog):
    """Another interface must be given explicitly and is logged as a warning; so is joining a
    scheduler beyond this machine over plain tcp (its TLS comes from Dask's config)."""
    import distributed

    from ovlift.flows import join_cluster, local_cluster

    with caplog.at_level("WARNING", logger="ovlift"), local_cluster(n_workers=0, dashboard_address=":0") as cluster:
        assert {s.getsockname()[0] for s in cluster.scheduler.http_server._sockets.values()} == {"0.0.0.0"}
    assert "local Dask cluster: listening beyond this machine on :0 (as asked)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ovlift"):
        join_cluster("tcp://127.0.0.1:8786")
        join_cluster("tls://10.0.0.2:8786")
        assert caplog.text == ""
        join_cluster("tcp://10.0.0.2:8786")
    assert "tcp://10.0.0.2:8786: joining a Dask scheduler without TLS" in caplog.text
    assert distributed.comm.get_address_host("tls://10.0.0.2:8786") == "10.0.0.2"


def test_joining_a_tls_scheduler_takes_its_certificates_from_dask_config(tmp_path):
    """``--dask-address tls://...``: the client is configured like any Dask client, by
    ``distributed.comm.tls.*`` (here through ``dask.config.set``; ``DASK_DISTRIBUTED__COMM__TLS__...``
    variables or a YAML file in ``~/.config/dask`` do the same)."""
    import dask
    import distributed
    from distributed.security import Security

    from ovlift.flows import join_cluster

    keys = Security.temporary()  # a CA, and certificates it signed, as PEM text
    files = {}
    for name in ("ca_file", "client_cert", "client_key", "scheduler_cert", "scheduler_key"):
        files[name] = str(tmp_path / name)
        (tmp_path / name).write_text(getattr(keys, f"tls_{name}"))
    ca, cert, key = files["ca_file"], files["client_cert"], files["client_key"]
    scheduler_pem = {"tls_scheduler_cert": files["scheduler_cert"], "tls_scheduler_key": files["scheduler_key"]}
    server = Security(tls_ca_file=ca, **scheduler_pem)
    options = {"host": "tls://127.0.0.1", "dashboard": False, "security": server}
    own = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key)  # the cluster object's own client
    scheduler = {"cls": distributed.Scheduler, "options": options}
    with distributed.SpecCluster(workers={}, scheduler=scheduler, security=own) as cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        config = {"ca-file": ca, "client.cert": cert, "client.key": key}
        with dask.config.set({f"distributed.comm.tls.{k}": v for k, v in config.items()}):
            with join_cluster(cluster.scheduler_address) as runner:
                assert runner.client.scheduler_info()["address"] == cluster.scheduler_address
