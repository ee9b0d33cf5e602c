"""``ovlift demo``: the main job on embedded toy data.

Writes a plan into the work directory, runs it (every stage cached after the
first run), and shows what the store holds.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.console import Console

from ovlift.pipeline.plan import load_plan
from ovlift.pipeline.runner import Runner
from ovlift.pipeline.status import store_status

DEMO_PLAN = {
    "store": "store.zarr",
    "dataset": {"name": "toy", "num_scenes": 4, "seed": 0},
    "vocabulary": "scannet20",
    "device": "cpu",
    "stages": {"input": {}},
}


def run_demo(workdir: Path, console: Console) -> None:
    from ovlift.pipeline.cli import print_status

    workdir.mkdir(parents=True, exist_ok=True)
    plan_path = workdir / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(DEMO_PLAN, sort_keys=False))
    plan = load_plan(plan_path)
    runner = Runner(plan)
    report = runner.run()
    console.print(f"[bold]demo[/bold]: {report.summary()}")
    if report.failed:
        raise SystemExit(1)
    print_status(store_status(runner.store, plan))
    console.print(f"plan: {plan_path}\nstore: {plan.store}")
