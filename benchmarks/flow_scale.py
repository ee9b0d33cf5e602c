"""Scale-out of the per-scene stages: the plain runner against the dataset flow on 1, 2 and
4 local Dask workers, with the flow's fixed start-up cost measured apart.

    .venv/bin/python benchmarks/flow_scale.py [--scenes 40] [--workers 1 2 4] [--dir /tmp/x]

Each run starts from an empty store (so every stage runs) over ``--scenes`` toy rooms:
``input``, ``extract2d`` (the synthetic teacher) and ``project``, one Prefect task per
scene. Reported per run: wall time of the work, the stages' own compute time (summed
over the outcomes), the speedup over the plain runner, and the overhead per task:
the worker time not spent in stages, ``(workers x wall - compute) / tasks`` (Prefect's
task bookkeeping against its server, Dask scheduling, each task reloading the plan).
Start-up is reported apart: the temporary Prefect server, and the cluster of N workers up
with ovlift (and torch) imported in each.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OVLIFT_PROGRESS", "0")


def write_plan(folder: Path, name: str, scenes: int) -> Path:
    data = {
        "store": str(folder / f"{name}.zarr"),
        "dataset": {"name": "toy", "num_scenes": scenes, "num_frames": 8, "image_height": 96, "image_width": 128},
        "device": "cpu",
        "vocabulary": "scannet20",
        "stages": {
            "input": {},
            "extract2d": {"t": {"implementation": "synthetic", "feature_height": 48, "feature_width": 64}},
            "project": {},
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def compute_seconds(report) -> float:
    return sum(o.seconds for o in report.outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flow-scale-", dir=args.dir))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    os.environ.setdefault("OVLIFT_LOG_DIR", str(work / "logs"))
    from ovlift import flow_logging

    flow_logging.quiet(work / "logs" / "flow-scale.log")
    import distributed
    from prefect_dask import DaskTaskRunner

    from ovlift.flows import dataset_flow, local_cluster, outcome, prefect_api
    from ovlift.pipeline.plan import load_plan
    from ovlift.pipeline.runner import Runner, RunReport

    rows = []
    try:
        plan = write_plan(work, "plain", args.scenes)
        Runner(load_plan(plan)).run(stages=["input"], scenes=["toy_0000"])  # warm imports and caches
        shutil.rmtree(work / "plain.zarr")
        start = time.perf_counter()
        plain = Runner(load_plan(plan)).run()
        plain_s = time.perf_counter() - start
        rows.append(("plain runner", 1, plain_s, compute_seconds(plain), None, None))
        print(f"plain runner: {plain_s:.1f} s, stages' compute {compute_seconds(plain):.1f} s", flush=True)

        start = time.perf_counter()
        with prefect_api():
            server_s = time.perf_counter() - start
            print(f"temporary Prefect server: {server_s:.1f} s to start", flush=True)
            for n in args.workers:
                plan = write_plan(work, f"w{n}", args.scenes)
                start = time.perf_counter()
                cluster = local_cluster(n_workers=n)
                with distributed.Client(cluster) as client:  # workers up, ovlift and torch imported
                    client.wait_for_workers(n)
                    client.run(importlib.import_module, "ovlift.flows")
                cluster_s = time.perf_counter() - start
                with cluster:
                    runner = DaskTaskRunner(address=cluster.scheduler_address)
                    start = time.perf_counter()
                    outcomes = dataset_flow.with_options(task_runner=runner)(str(plan))
                    wall = time.perf_counter() - start
                report = RunReport([outcome(o) for o in outcomes], wall)
                assert not report.failed, report.markdown()
                tasks = args.scenes  # one task per scene: the three stages share resources
                compute = compute_seconds(report)
                overhead = (n * wall - compute) / tasks
                rows.append((f"flow, {n} worker(s)", n, wall, compute, overhead, cluster_s))
                print(
                    f"flow on {n} worker(s): {wall:.1f} s ({plain_s / wall:.2f}x the plain runner), stages' compute "
                    f"{compute:.1f} s, overhead {overhead:.2f} s per task; cluster start {cluster_s:.1f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.scenes} toy scenes (input, extract2d, project), {os.cpu_count()} cores, server {server_s:.1f} s\n")
    print("| run | workers | wall (s) | speedup | stages' compute (s) | overhead per task (s) | cluster start (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, n, wall, compute, overhead, cluster_s in rows:
        over = "-" if overhead is None else f"{overhead:.2f}"
        start = "-" if cluster_s is None else f"{cluster_s:.1f}"
        print(f"| {name} | {n} | {wall:.1f} | {plain_s / wall:.2f} | {compute:.1f} | {over} | {start} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
