"""Prefect flows over the plain runner: per scene, and per dataset.

The dataset flow walks the plan's phases (``Runner.phases``): a run of per-scene
stages is mapped over the scenes as Prefect tasks on the flow's task runner (a
Dask cluster through prefect-dask), a global stage (distillation, evaluation)
runs as one task once its upstream scenes are done. Tasks carry only strings,
so any Dask worker that sees the same paths can run them. Offline, Prefect
starts its temporary local server by itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict

# Every Dask worker process starts its own temporary server; on a loaded 2-core
# machine that can take longer than Prefect's 20 s default.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, task, unmapped
from prefect_dask import DaskTaskRunner

from ovlift.pipeline.plan import load_plan
from ovlift.pipeline.runner import Outcome, Runner, RunOptions, RunReport, Status, failures


def _options(force: list[str]) -> RunOptions:
    return RunOptions(frozenset(force))


def _failures(failed: list[list[str]]) -> frozenset[tuple[str, str]]:
    return frozenset((scene, key) for scene, key in failed)


@task(name="ovlift-scene", task_run_name="{scene_id}")
def scene_task(
    plan_path: str, scene_id: str, keys: list[str], forced: list[str], failed: list[list[str]]
) -> list[dict]:
    runner = Runner(load_plan(plan_path))
    return [asdict(o) for o in runner.run_scene(scene_id, keys, _options(forced), _failures(failed))]


@task(name="ovlift-global", task_run_name="{key}")
def global_task(plan_path: str, key: str, forced: list[str], failed: list[list[str]]) -> dict:
    runner = Runner(load_plan(plan_path))
    return asdict(runner.run_global(key, _options(forced), _failures(failed)))


def outcome(data: dict) -> Outcome:
    """An outcome back from a task (tasks carry plain dicts and strings)."""
    return Outcome(**{**data, "status": Status(data["status"])})


@flow(name="ovlift-scene")
def scene_flow(plan_path: str, scene_id: str, stages: list[str] | None = None, force: Sequence[str] = ()) -> list[dict]:
    """The per-scene stages of the plan for one scene."""
    runner = Runner(load_plan(plan_path))
    keys = [k for k in runner.select_stages(stages) if not runner.plan.stages[k].is_global]
    return scene_task(plan_path, scene_id, keys, sorted(runner.plan.downstream(list(force))), [])


@flow(name="ovlift-dataset")
def dataset_flow(
    plan_path: str, stages: list[str] | None = None, scenes: list[str] | None = None, force: Sequence[str] = ()
) -> list[dict]:
    """Every stage of the plan: per-scene phases as mapped tasks, global stages as single tasks."""
    runner = Runner(load_plan(plan_path))
    runner.store.clean_stale()
    scene_ids = runner.select_scenes(scenes)
    forced = sorted(runner.plan.downstream(list(force)))
    outcomes: list[dict] = []
    for kind, keys in runner.phases(runner.select_stages(stages)):
        failed = [list(pair) for pair in sorted(failures(outcome(o) for o in outcomes))]
        if kind == "global":
            outcomes.append(global_task.submit(plan_path, keys[0], forced, failed).result())
            continue
        futures = scene_task.map(unmapped(plan_path), scene_ids, unmapped(keys), unmapped(forced), unmapped(failed))
        outcomes += [o for per_scene in futures.result() for o in per_scene]
    return outcomes


def run_dataset_flow(
    plan_path: str,
    stages: list[str] | None = None,
    scenes: list[str] | None = None,
    force: Sequence[str] = (),
    workers: int = 2,
    dask_address: str | None = None,
) -> RunReport:
    """Run ``dataset_flow`` on a local Dask cluster of ``workers`` processes, or on
    the scheduler at ``dask_address``."""
    if dask_address:
        task_runner = DaskTaskRunner(address=dask_address)
    else:
        task_runner = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
    start = time.perf_counter()
    outcomes = dataset_flow.with_options(task_runner=task_runner)(plan_path, stages, scenes, list(force))
    return RunReport(outcomes=[outcome(o) for o in outcomes], seconds=time.perf_counter() - start)
