"""``ovlift demo``: the main job on embedded toy data, end to end.

Eight toy training rooms, two validation rooms (where the demo's settings were chosen)
and two test rooms; a trained 2D teacher (a small network trained as LSeg is on other
rooms, ``models/toy/demo``) in the MiniLM text space; occlusion-tested projection and
fusion; CUS3D's 3D filter; distillation of a small sparse U-Net; prediction and
evaluation. Prints the metrics of the fused 2D features, the distilled 3D student and
their ensemble on the test rooms, and writes the report, plots and PLYs under the work
directory. A second run reuses the cache and takes seconds.

The demo's student sees point colours as well as geometry (``use_color``): on
this 2-core CPU budget a geometry-only student learns too slowly to be worth
showing (docs/studies.md, "The demo"). Everything else follows the OpenScene baseline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from ovlift.cache_schema import StageGroup
from ovlift.cache_schema.groups.evaluate import predictor_names
from ovlift.kernels.metrics import scores
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.ply import write_ply
from ovlift.query import write_query_outputs

PLANS = Path(__file__).resolve().parents[1] / "plans"
"""The repository's commented plans (``plans/``); the demo's is ``plans/demo.yaml``."""

QUICK = {
    "num_scenes": 3,
    "train": ["toy_0000", "toy_0001"],
    "val": ["toy_0002"],
    "test": ["toy_0002"],  # a smoke test of the command: one scene to look at and to report
    "epochs": 2,
    "student": {"planes": [8, 16, 16, 16, 16, 16, 8, 8], "init_dim": 8, "voxel_size_m": 0.1},
}


def demo_plan(workdir: Path, quick: bool = False) -> dict:
    """``plans/demo.yaml`` with its store in ``workdir``; ``quick`` shrinks it to seconds
    (for tests of the command itself)."""
    path = PLANS / "demo.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"the demo plan {path} is missing (ovlift demo runs from a clone of the repository)")
    plan = yaml.safe_load(path.read_text())
    plan["store"] = str((workdir / "store.zarr").resolve())
    if quick:
        plan["dataset"]["num_scenes"] = QUICK["num_scenes"]
        plan["splits"] = {"train": QUICK["train"], "val": QUICK["val"], "test": QUICK["test"]}
        plan["stages"]["distill"]["epochs"] = QUICK["epochs"]
        plan["stages"]["distill"]["student"].update(QUICK["student"])
    return plan


def run_demo(workdir: Path, console: Console, quick: bool = False) -> dict:
    """Run the demo plan; return the held-out metrics per predictor."""
    workdir.mkdir(parents=True, exist_ok=True)
    plan_path = PLANS / "demo.yaml"
    runner = Runner(plan_from_dict(demo_plan(workdir, quick), PLANS, str(plan_path)))
    report = runner.run()
    console.print(f"[bold]demo[/bold]: {report.summary()}")
    if report.failed:
        for o in report.failed:
            console.print(f"[red]{o.scene_id} {o.stage}: {o.status}[/red] {o.error}")
        raise SystemExit(1)
    evaluate = runner.store.read(runner.plan.stages["evaluate"].group_path(None))
    metrics = evaluate.info["metrics"]
    chance = scores(_uniform_confusion(evaluate.load("confusion_3d"))).miou
    held_out = runner.plan.scenes_for("evaluate")  # the test rooms
    print_metrics(
        console, metrics, chance, held_out, evaluate.info["classes_without_ground_truth"], evaluate.info["source"]
    )
    outputs = write_outputs(runner, workdir / "outputs", evaluate, held_out)
    quick_note = " shrunk by --quick" if quick else ""
    console.print(f"outputs: {outputs}  (plan {plan_path}{quick_note}, store {runner.store.url})")
    return metrics


def _uniform_confusion(confusion: np.ndarray) -> np.ndarray:
    """The expected confusion of guessing classes uniformly, for a chance level."""
    k = confusion.shape[0]
    truth = confusion.sum(1).astype(np.float64)
    return np.concatenate([np.outer(truth, np.full(k, 1 / k)), np.zeros((k, 1))], axis=1)


def print_metrics(
    console: Console, metrics: dict, chance: float, held_out: list[str], absent: list[str], source: str
) -> None:
    """The held-out table, under ScanNet's rule (a class predicted but absent from the
    ground truth has IoU 0), with the classes that have no ground truth listed."""
    caption = "ScanNet's rule: a predicted class absent from the ground truth has IoU 0. "
    caption += f"No ground truth: {', '.join(absent) or 'none'}."
    table = Table(title=f"test rooms {', '.join(held_out)} (%)", caption=caption)
    for column in ("predictor", "mIoU", "mAcc", "overall acc."):
        table.add_column(column, justify="right" if column != "predictor" else "left")
    names = predictor_names(source)
    for key, name in names.items():
        if key not in metrics:
            continue
        m = metrics[key]
        table.add_row(name, f"{100 * m['miou']:.1f}", f"{100 * m['macc']:.1f}", f"{100 * m['overall_accuracy']:.1f}")
    table.add_row("chance (uniform guess)", f"{100 * chance:.1f}", "", "")
    console.print(table)
    ratio = metrics["3d"]["miou"] / metrics["2d"]["miou"]
    console.print(f"distilled 3D reaches {ratio:.0%} of the {names['2d']} mIoU without seeing any image at test time")


def write_outputs(runner: Runner, folder: Path, evaluate: StageGroup, held_out: list[str]) -> Path:
    """The evaluation report and plots, the training log, and per held-out scene the
    student's labels and a query, in one folder."""
    from ovlift.plots import class_palette

    folder.mkdir(parents=True, exist_ok=True)
    for file in Path(evaluate.info["report"]).iterdir():
        shutil.copy(file, folder / file.name)
    distill = runner.store.read(runner.plan.stages["distill"].group_path(None))
    for name in ("training_curves.png", "training_log.csv"):
        shutil.copy(Path(distill.info["checkpoints"]) / name, folder / name)
    palette = class_palette(evaluate.info["classes"])
    for scene in held_out:
        points = runner.store.read(runner.plan.stages["input"].group_path(scene)).load("points")
        labels = runner.store.read(runner.plan.stages["predict"].group_path(scene)).load("labels_3d")
        write_ply(folder / f"{scene}_student_labels.ply", points, palette[labels])
        write_query_outputs(runner.store, scene, "a sofa", "student", None, "single", folder)
    return folder
