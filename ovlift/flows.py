"""Prefect flows over the plain runner: per scene, and per dataset.

The dataset flow walks the plan's phases (``Runner.phases``). A run of per-scene
stages is cut where the stages' resources change (``resource_phases``): each piece is
one Prefect task per scene, chained to the scene's previous piece, so a scene's
CPU stages run on any worker while its GPU stages wait for a GPU worker. A global
stage (distillation, evaluation) runs as one task once its upstream scenes are
done. Tasks carry only strings, so any Dask worker that sees the same paths (or
the same object store) can run them.

Placement: a task of GPU stages (``Stage.resources``: it computes on a CUDA device)
is submitted with the Dask resource ``GPU: 1`` when the cluster's workers declare
``GPU`` (``dask worker --resources GPU=1``), so it runs only there, one at a time per
declared GPU: a machine's GPU count is its workers' ``GPU`` resources. Prefect's tag
concurrency limits count across the whole server, not per machine, so they cannot
do this. Stages also declare their peak memory, held against a ``MEMORY`` resource
(GB) where workers declare one. A cluster without ``GPU`` workers runs GPU stages
anywhere, with a warning. Each worker process uses ``torch_threads`` torch threads
(1: processes, not threads, share the cores).

After the run, the flow publishes a Markdown artifact (key ``ovlift-<plan>``): the
run table and, after ``evaluate``, its metrics, so the Prefect UI shows results.

Exposure: a Dask cluster runs whatever its clients send, without authentication unless
TLS is configured. The local cluster therefore listens on the loopback only (scheduler,
dashboard, workers); another interface must be asked for and is warned about. A
scheduler joined by address gets its TLS from Dask's own configuration
(``distributed.comm.tls.*``), as every Dask client does; a plain ``tcp://`` address
beyond this machine is warned about.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

# Every Dask worker process starts its own temporary server; on a loaded 2-core
# machine that can take longer than Prefect's 20 s default.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import dask
import distributed
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.types.entrypoint import EntrypointType
from prefect_dask import DaskTaskRunner

from ovlift.cache_schema.files import read_text
from ovlift.network import is_loopback_host
from ovlift.pipeline.plan import Plan, load_plan
from ovlift.pipeline.runner import Outcome, Runner, RunOptions, RunReport, Status, failures
from ovlift.progress import progress
from ovlift.stages.base import Resources

ARTIFACT_KEY = "ovlift-{plan}"
LOOPBACK = "127.0.0.1"
"""Where the local cluster listens unless told otherwise: nothing beyond this machine reaches it."""
log = logging.getLogger("ovlift")


def _options(force: list[str]) -> RunOptions:
    return RunOptions(frozenset(force))


def _failures(failed: list[list[str]], previous: list[dict]) -> frozenset[tuple[str, str]]:
    return frozenset((scene, key) for scene, key in failed) | failures(outcome(o) for o in previous)


def _on_worker(threads: int) -> str | None:
    """Inside a Dask worker: set torch's thread count (spawned workers ignore the parent's)
    and return the worker's name; elsewhere None, the process left as configured."""
    try:
        worker = distributed.get_worker()
    except ValueError:
        return None
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return str(worker.name)


def _record(outcomes, worker: str | None) -> list[dict]:
    return [{**asdict(o), "worker": worker} for o in outcomes]


@task(name="ovlift-scene", task_run_name="{scene_id}: {keys}")
def scene_task(
    plan_path: str,
    scene_id: str,
    keys: list[str],
    forced: list[str],
    failed: list[list[str]],
    previous: list[dict] | None = None,
    torch_threads: int = 1,
) -> list[dict]:
    """Per-scene stages ``keys`` of one scene; ``previous``: this scene's outcomes of the
    piece before (a stage reading a failed one is skipped)."""
    worker = _on_worker(torch_threads)
    runner = Runner(load_plan(plan_path))
    done = runner.run_scene(scene_id, keys, _options(forced), _failures(failed, previous or []))
    return (previous or []) + _record(done, worker)


@task(name="ovlift-global", task_run_name="{key}")
def global_task(plan_path: str, key: str, forced: list[str], failed: list[list[str]], torch_threads: int = 1) -> dict:
    worker = _on_worker(torch_threads)
    runner = Runner(load_plan(plan_path))
    return _record([runner.run_global(key, _options(forced), _failures(failed, []))], worker)[0]


def outcome(data: dict) -> Outcome:
    """An outcome back from a task (tasks carry plain dicts and strings)."""
    return Outcome(**{**data, "status": Status(data["status"])})


def stage_resources(plan: Plan, key: str, gpu_if_on_device: bool = False) -> Resources:
    return plan.stages[key].stage.resources(plan.device, gpu_if_on_device)


def resource_phases(
    runner: Runner, keys: Sequence[str], gpu_if_on_device: bool = False
) -> list[tuple[str, list[tuple[list[str], Resources]]]]:
    """``Runner.phases`` with each per-scene run cut where the resources change:
    [("scene", [([input], cpu), ([extract2d/a, project], gpu), ([segment], cpu)]), ("global", [([distill], gpu)])].
    A piece's memory is its stages' largest."""
    result = []
    for kind, phase_keys in runner.phases(keys):
        pieces: list[tuple[list[str], Resources]] = []
        for key in phase_keys:
            res = stage_resources(runner.plan, key, gpu_if_on_device)
            if pieces and pieces[-1][1].gpu == res.gpu:
                piece_keys, piece_res = pieces[-1]
                pieces[-1] = (piece_keys + [key], Resources(res.gpu, max(piece_res.memory_gb, res.memory_gb)))
            else:
                pieces.append(([key], res))
        result.append((kind, pieces))
    return result


def declared_resources(task_runner) -> set[str]:
    """Names of the resources any worker of the flow's Dask cluster declares (empty off Dask)."""
    if not isinstance(task_runner, DaskTaskRunner):
        return set()
    workers = task_runner.client.scheduler_info(n_workers=-1)["workers"].values()
    return {name for w in workers for name in (w.get("resources") or {})}


def dask_resources(res: Resources, declared: set[str]) -> dict[str, float]:
    """The Dask resources a task of ``res`` asks for, among those the cluster declares."""
    wanted = {}
    if res.gpu and "GPU" in declared:
        wanted["GPU"] = 1
    if "MEMORY" in declared:
        wanted["MEMORY"] = res.memory_gb
    return wanted


def run_markdown(plan_path: str, report: RunReport) -> str:
    """The artifact: the run table, then the metrics of each ``evaluate`` this run ran or found
    cached (that version, not whatever an earlier run left as the latest)."""
    parts = [f"# ovlift: {Path(plan_path).name}", "", report.markdown()]
    runner = Runner(load_plan(plan_path))
    for o in report.outcomes:
        stage_plan = runner.plan.stages[o.stage]
        if stage_plan.name != "evaluate" or not o.ok:
            continue
        key = o.stage
        group = runner.store.read(stage_plan.group_path(None), fingerprint=o.fingerprint)
        metrics = read_text(group.info["report"], "metrics.md") if group is not None else None
        if metrics is not None:
            parts += [f"## {key}", "", metrics]
    return "\n".join(parts)


def artifact_key(plan_path: str) -> str:
    """Prefect artifact keys take lowercase letters, digits and dashes."""
    return ARTIFACT_KEY.format(plan=re.sub(r"[^a-z0-9-]+", "-", Path(plan_path).stem.lower()).strip("-"))


@flow(name="ovlift-scene")
def scene_flow(plan_path: str, scene_id: str, stages: list[str] | None = None, force: Sequence[str] = ()) -> list[dict]:
    """The per-scene stages of the plan for one scene."""
    runner = Runner(load_plan(plan_path))
    keys = [k for k in runner.select_stages(stages) if not runner.plan.stages[k].is_global]
    return scene_task(plan_path, scene_id, keys, sorted(runner.plan.keys_for(list(force))), [])


def local_cluster(
    n_workers: int = 2,
    gpus: int = 0,
    memory_gb: float | None = None,
    host: str = LOOPBACK,
    dashboard_address: str | None = None,
) -> distributed.SpecCluster:
    """A Dask cluster on this machine: ``n_workers`` single-threaded worker processes, the first
    ``gpus`` of them declaring ``GPU=1`` and seeing only their own device (``CUDA_VISIBLE_DEVICES``);
    ``memory_gb`` declares each worker's ``MEMORY``. The scheduler, the workers and the dashboard
    listen on ``host``, the loopback by default (Dask's own dashboard default, ``:0``, is every
    interface), the dashboard on a free port unless ``dashboard_address`` (``host:port``) says
    otherwise; an address beyond the loopback is logged as a warning."""
    from prefect.settings import get_current_settings

    dashboard = dashboard_address or f"{host}:0"
    exposed = [a for a in (host, dashboard) if not is_loopback(a)]
    if exposed:
        log.warning(
            "local Dask cluster: listening beyond this machine on %s (as asked): whoever reaches it can run "
            "code on its workers (no TLS, no authentication)",
            " and ".join(exposed),
        )
    # The flow's API (the temporary server too): else every worker starts a server of its own
    # on the same database (seconds each, and "database is locked").
    api = get_current_settings().api.url
    workers = {}
    for i in range(n_workers):
        options: dict = {"nthreads": 1, "host": host, "resources": {}, "env": {}}
        if api:
            options["env"]["PREFECT_API_URL"] = api
        if i < gpus:
            options["resources"]["GPU"] = 1
            options["env"]["CUDA_VISIBLE_DEVICES"] = str(i)
        if memory_gb:
            options["resources"]["MEMORY"] = memory_gb
        workers[f"worker-{i}"] = {"cls": distributed.Nanny, "options": options}
    scheduler = {"cls": distributed.Scheduler, "options": {"host": host, "dashboard_address": dashboard}}
    return distributed.SpecCluster(workers=workers, scheduler=scheduler, name="ovlift")


def is_loopback(address: str) -> bool:
    """Whether a host, ``host:port`` or Dask address (``tcp://host:port``) is on the loopback only.
    An empty host (``:8787``) or ``0.0.0.0`` means every interface; a host name other than
    ``localhost`` counts as beyond this machine."""
    if "://" in address:
        host = distributed.comm.get_address_host(address)
    elif address.startswith("["):  # [::1]:8787
        host = address[1 : address.find("]")]
    else:
        host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return is_loopback_host(host)


def join_cluster(address: str) -> DaskTaskRunner:
    """A task runner on the Dask scheduler at ``address``. Its client takes TLS (``tls://``
    addresses) from Dask's configuration, ``distributed.comm.tls.*`` (a ``~/.config/dask`` YAML
    file or ``DASK_DISTRIBUTED__COMM__TLS__...`` variables), as any Dask client does; a plain
    ``tcp://`` address beyond the loopback is logged as a warning."""
    if not address.startswith("tls://") and not is_loopback(address):
        log.warning(
            "%s: joining a Dask scheduler without TLS: plans, paths and results cross the network "
            "unencrypted and the scheduler runs whatever it is sent; use a tls:// address with Dask's "
            "distributed.comm.tls settings (docs/scale.md)",
            address,
        )
    return DaskTaskRunner(address=address)


def task_runner_from_env() -> DaskTaskRunner:
    """The dataset flow's task runner when nothing overrides it (deployments): the scheduler at
    ``OVLIFT_DASK_ADDRESS`` (``join_cluster``), else a ``local_cluster`` of ``OVLIFT_DASK_WORKERS`` (2) workers,
    ``OVLIFT_DASK_GPUS`` (0) of them GPU workers."""
    address = os.environ.get("OVLIFT_DASK_ADDRESS")
    if address:
        return join_cluster(address)
    kwargs = {"n_workers": int(os.environ.get("OVLIFT_DASK_WORKERS", "2"))}
    kwargs["gpus"] = int(os.environ.get("OVLIFT_DASK_GPUS", "0"))
    return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs=kwargs)


@flow(name="ovlift-dataset", task_runner=task_runner_from_env())
def dataset_flow(
    plan_path: str,
    stages: list[str] | None = None,
    scenes: list[str] | None = None,
    force: list[str] | None = None,
    torch_threads: int = 1,
    gpu_if_on_device: bool = False,
) -> list[dict]:
    """Every stage of the plan: per-scene pieces as tasks chained per scene, global stages
    as single tasks; ends with the run-table artifact. ``gpu_if_on_device`` places stages
    that compute on their device on GPU workers even when that device is the CPU."""
    start = time.perf_counter()
    logger = get_run_logger()
    runner = Runner(load_plan(plan_path))
    runner.store.clean_stale()
    scene_ids = runner.select_scenes(scenes)
    forced = sorted(runner.plan.keys_for(list(force or [])))
    context = FlowRunContext.get()
    declared = declared_resources(context.task_runner if context else None)
    outcomes: list[dict] = []
    warned = False
    for kind, pieces in resource_phases(runner, runner.select_stages(stages), gpu_if_on_device):
        failed = [list(pair) for pair in sorted(failures(outcome(o) for o in outcomes))]
        if any(res.gpu for _, res in pieces) and "GPU" not in declared and not warned:
            logger.warning("GPU stages run on any worker: no Dask worker declares a GPU resource")
            warned = True
        submit = Submit(plan_path, forced, failed, declared, torch_threads)
        outcomes += submit.global_stage(pieces) if kind == "global" else submit.scene_pieces(pieces, scene_ids)
    report = RunReport([outcome(o) for o in outcomes], time.perf_counter() - start)
    create_markdown_artifact(
        key=artifact_key(plan_path), markdown=run_markdown(plan_path, report), description=report.summary()
    )
    return outcomes


@dataclass(frozen=True)
class Submit:
    """One phase of ``dataset_flow`` submitted as tasks, with what every task of it is given."""

    plan_path: str
    forced: list[str]
    failed: list[list[str]]
    """(scene, stage) pairs that failed in earlier phases (their downstream is skipped)."""
    declared: set[str]
    """Resources the Dask workers declare."""
    torch_threads: int

    def global_stage(self, pieces: list) -> list[dict]:
        (key,), res = pieces[0]
        with dask.annotate(resources=dask_resources(res, self.declared)):
            future = global_task.submit(self.plan_path, key, self.forced, self.failed, self.torch_threads)
        result = future.result()
        log.info("%s: %s", key, result["status"])
        return [result]

    def scene_pieces(self, pieces: list, scene_ids: list[str]) -> list[dict]:
        """The phase's pieces chained per scene (a scene's next piece waits for its previous one)."""
        chains: dict[str, object] = dict.fromkeys(scene_ids)
        for keys, res in pieces:
            with dask.annotate(resources=dask_resources(res, self.declared)):
                chains = {
                    s: scene_task.submit(
                        self.plan_path, s, keys, self.forced, self.failed, chains[s], self.torch_threads
                    )
                    for s in scene_ids
                }
        names = ", ".join(k for keys, _ in pieces for k in keys)
        results = {
            id(f): f.result() for f in progress(as_completed(list(chains.values())), names, len(chains), "scene")
        }
        done = [o for s in scene_ids for o in results[id(chains[s])]]
        counts = Counter(o["status"] for o in done)
        log.info("%s on %d scenes: %s", names, len(scene_ids), ", ".join(f"{n} {st}" for st, n in counts.items()))
        return done


def run_dataset_flow(
    plan_path: str,
    stages: list[str] | None = None,
    scenes: list[str] | None = None,
    force: Sequence[str] = (),
    workers: int = 2,
    dask_address: str | None = None,
    gpus: int | None = None,
    torch_threads: int = 1,
    gpu_if_on_device: bool = False,
) -> RunReport:
    """Run ``dataset_flow`` on a local Dask cluster of ``workers`` processes (``gpus`` of them
    GPU workers; None: as many as this machine has CUDA devices, at most ``workers``; on the
    loopback), or on the scheduler at ``dask_address`` (``join_cluster``: TLS from Dask's config)."""
    if dask_address:
        task_runner = join_cluster(dask_address)
    else:
        if gpus is None:
            import torch

            gpus = min(workers, torch.cuda.device_count())
        task_runner = DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs={"n_workers": workers, "gpus": gpus})
    start = time.perf_counter()
    with prefect_api():
        outcomes = dataset_flow.with_options(task_runner=task_runner)(
            plan_path, stages, scenes, list(force), torch_threads, gpu_if_on_device
        )
    return RunReport(outcomes=[outcome(o) for o in outcomes], seconds=time.perf_counter() - start)


@contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API the run reports to: ``PREFECT_API_URL`` if set, else a temporary local
    server started here and stopped after, whose URL the Dask workers inherit (each would
    otherwise start a server of its own on the same database)."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # its heartbeat races the runs for sqlite
    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
            APILogWorker.drain_all(timeout=10)  # else logs retry a stopped server for a minute at exit
    finally:
        del os.environ["PREFECT_API_URL"]
        server.stop()


def deployment(
    plan_path: str,
    name: str,
    cron: str | None = None,
    work_pool: str | None = None,
    stages: list[str] | None = None,
    scenes: list[str] | None = None,
    force: list[str] | None = None,
):
    """``dataset_flow`` of a plan as a Prefect deployment ``ovlift-dataset/<name>``. Its
    entrypoint is the module path ``ovlift.flows.dataset_flow``: whoever runs it (``serve``,
    or a work pool's worker) imports it from the installed ovlift, so no code is uploaded
    and the plan path must be valid where it runs. Parameters: plan_path, stages, scenes, force."""
    parameters = {"plan_path": str(Path(plan_path).resolve()), "stages": stages, "scenes": scenes, "force": force}
    return dataset_flow.to_deployment(
        name=name,
        parameters=parameters,
        cron=cron,
        work_pool_name=work_pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["ovlift"],
        description=f"ovlift plan {Path(plan_path).name}",
    )


def deploy(plan_path: str, name: str, cron: str | None = None, work_pool: str | None = None, **selection) -> str:
    """Register (or update) the deployment on the Prefect server; returns its id."""
    return str(deployment(plan_path, name, cron, work_pool, **selection).apply())


def serve(deployments: Sequence) -> None:
    """Serve deployments from this process until interrupted (no work pool needed)."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments, print_starting_message=False)
