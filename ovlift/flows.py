"""Prefect flows over the plain runner: per scene, and per dataset (scenes as tasks on Dask).

Each scene task loads the plan from its path and runs the runner for that one
scene, so tasks carry only strings and any Dask worker that sees the same paths
can run them. Offline, Prefect starts its temporary local server by itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict

from prefect import flow, task, unmapped
from prefect_dask import DaskTaskRunner

from ovlift.pipeline.plan import load_plan
from ovlift.pipeline.runner import Outcome, RunReport, Runner


@task(name="ovlift-scene", task_run_name="{scene_id}")
def scene_task(plan_path: str, scene_id: str, stages: list[str] | None, force: list[str]) -> list[dict]:
    runner = Runner(load_plan(plan_path))
    selected = runner.select_stages(stages)
    forced = runner.plan.downstream(list(force)) if force else set()
    return [asdict(o) for o in runner.run_scene(scene_id, selected, forced)]


@flow(name="ovlift-scene")
def scene_flow(plan_path: str, scene_id: str, stages: list[str] | None = None, force: Sequence[str] = ()) -> list[dict]:
    """Every stage of the plan for one scene."""
    return scene_task(plan_path, scene_id, stages, list(force))


@flow(name="ovlift-dataset")
def dataset_flow(
    plan_path: str, stages: list[str] | None = None, scenes: list[str] | None = None, force: Sequence[str] = ()
) -> list[dict]:
    """Every scene of the plan's dataset, one task per scene, on the flow's task runner."""
    runner = Runner(load_plan(plan_path))
    runner.store.clean_stale()
    scene_ids = runner.select_scenes(scenes)
    futures = scene_task.map(unmapped(plan_path), scene_ids, unmapped(stages), unmapped(list(force)))
    return [o for outcomes in futures.result() for o in outcomes]


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
        runner = DaskTaskRunner(address=dask_address)
    else:
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
    start = time.perf_counter()
    outcomes = dataset_flow.with_options(task_runner=runner)(plan_path, stages, scenes, list(force))
    return RunReport(outcomes=[Outcome(**o) for o in outcomes], seconds=time.perf_counter() - start)
