import re
from pathlib import Path

import numpy as np
from conftest import scannet_miou, scene_truth
from plyfile import PlyData
from typer.testing import CliRunner

from ovlift.cache_schema.groups.evaluate import predictor_names
from ovlift.datasets.furniture import CLASS_COLORS
from ovlift.demo import PLANS, demo_plan
from ovlift.pipeline.cli import app
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner


def chance_miou(truth: np.ndarray, k: int) -> float:
    """mIoU of guessing each of k classes on 1/k of the points: class c, on n_c of N points, is
    guessed N/k times and right n_c/k times (IoU 0 for the absent, which are guessed too)."""
    n = np.bincount(truth[truth >= 0], minlength=k).astype(np.float64)
    return float(np.mean(n / k / (n + n.sum() / k - n / k)))


def printed(output: str, row: str) -> float:
    """The mIoU (%) the table prints in ``row``."""
    return float(re.search(rf"{re.escape(row)}\s*\S\s*([\d.]+)", output).group(1))


def check_first_run(output: str, workdir: Path) -> None:
    """The table's numbers are the held-out scene's labels scored point by point, the PLY holds its
    points in the colours of the student's labels."""
    runner = Runner(plan_from_dict(demo_plan(workdir, quick=True), PLANS))
    (scene,) = runner.plan.scenes_for("evaluate")
    points = runner.store.read(f"scenes/{scene}/input")
    predict = runner.store.read(f"scenes/{scene}/predict")
    classes = predict.info["classes"]
    truth = scene_truth(points, classes)
    for key, row in predictor_names(predict.info["source"]).items():
        if f"labels_{key}" in predict:
            assert (
                abs(printed(output, row) - 100 * scannet_miou(truth, predict.load(f"labels_{key}"), len(classes)))
                <= 0.051
            )
    assert abs(printed(output, "chance (uniform guess)") - 100 * chance_miou(truth, len(classes))) <= 0.051
    vertex = PlyData.read(str(workdir / "outputs" / f"{scene}_student_labels.ply"))["vertex"]
    np.testing.assert_array_equal(np.c_[vertex["x"], vertex["y"], vertex["z"]], points.load("points"))
    palette = np.array([CLASS_COLORS.get(c, (128, 128, 128)) for c in classes])
    np.testing.assert_array_equal(
        np.c_[vertex["red"], vertex["green"], vertex["blue"]], palette[predict.load("labels_3d")]
    )


def test_demo_command_runs_end_to_end_then_reuses_the_cache(tmp_path):
    """The quick variant of `ovlift demo` (same plan, tiny sizes): the metrics table,
    the outputs, and a second run that is all cache hits."""
    cli = CliRunner()
    first = cli.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--quick"])
    assert first.exit_code == 0, first.output
    assert "0 cached" in first.output
    check_first_run(first.output, tmp_path / "demo")
    outputs = tmp_path / "demo" / "outputs"
    for name in ("metrics.md", "report.json", "confusion_3d.png", "training_curves.png", "toy_0002_a_sofa_student.png"):
        assert (outputs / name).stat().st_size > 100, name
    second = cli.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--quick"])
    assert second.exit_code == 0, second.output
    assert " 0 ran" in second.output
