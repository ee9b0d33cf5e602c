"""``benchmarks/ablations.py`` on a tiny CUS3D study: the test split reported with val
beside, coverage and matched mIoU recomputed from the stored predictions, and ``--set``."""

import importlib.util
import json
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, TINY_STUDENT, scannet_miou, scene_truth

from ovlift.cache_schema import Store
from ovlift.datasets.toy import ToyConfig, ToyDataset
from ovlift.pipeline.plan import apply_overrides, plan_from_dict
from ovlift.pipeline.status import expected_fingerprints

TINY = [
    "dataset.num_scenes=3",
    "dataset.num_frames=4",
    "dataset.image_height=48",
    "dataset.image_width=64",
    "dataset.vertex_spacing_m=0.1",
    "dataset.seed=7",
    "splits={train: [toy_0000], val: [toy_0001], test: [toy_0002]}",
    "stages.extract2d.ovseg.feature_height=48",
    "stages.extract2d.ovseg.feature_width=64",
    f"stages.distill.student={json.dumps(TINY_STUDENT)}",
    "stages.distill.batch_size=1",
]


def load_ablations(monkeypatch):
    spec = importlib.util.spec_from_file_location("ablations", REPO / "benchmarks" / "ablations.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ablations", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def stored(ablations, row, out, scene: str):
    """A row's ``input`` and ``predict`` groups of ``scene``, read by the fingerprints of its plan."""
    base = apply_overrides(yaml.safe_load((ablations.PLANS / "cus3d-toy.yaml").read_text()), TINY, "test")
    plan = plan_from_dict(ablations.row_plan(base, row, (out / "store.zarr").resolve(), 1), ablations.PLANS)
    store, expected = Store(plan.store), expected_fingerprints(plan, Store(plan.store))
    paths = [plan.stages[key].group_path(scene) for key in ("input", "predict")]
    groups = [store.read(path, expected[path].fingerprint) for path in paths]
    assert None not in groups, f"row '{row.name}' wrote no {paths}"
    return groups


@pytest.mark.slow
def test_a_tiny_study_reports_test_with_val_beside_coverage_and_matched_miou(tmp_path, monkeypatch):
    ablations = load_ablations(monkeypatch)
    plan_file, column, rows = ablations.METHODS["cus3d"]
    none, both = rows[0], rows[3]  # no filter; both filters (the 3D one fills unseen object points)
    assert (none.name, both.name) == ("none", "both")
    monkeypatch.setitem(ablations.METHODS, "cus3d", (plan_file, column, [none, both]))

    result = ablations.study("cus3d", tmp_path, epochs=1, overrides=TINY)
    assert json.loads((tmp_path / "cus3d.json").read_text()) == result
    assert result["split"] == "test"
    assert result["scenes"] == {"test": ["toy_0002"], "val": ["toy_0001"], "train": ["toy_0000"]}

    scene = "toy_0002"
    # --set reached the dataset: the stored rooms are seed 7's, not the plan's seed 100's
    points = Store(tmp_path / "store.zarr").read(f"scenes/{scene}/input").load("points")
    config = ToyConfig(num_scenes=3, num_frames=4, image_height=48, image_width=64, vertex_spacing_m=0.1)
    np.testing.assert_allclose(points, ToyDataset(config.model_copy(update={"seed": 7})).load(scene).points, atol=1e-6)
    plan_seed = ToyDataset(config.model_copy(update={"seed": 100})).load(scene).points
    assert points.shape != plan_seed.shape or not np.allclose(points, plan_seed)

    scene_input, predict_none = stored(ablations, none, tmp_path, scene)
    _, predict_both = stored(ablations, both, tmp_path, scene)
    classes = predict_none.info["classes"]
    truth = scene_truth(scene_input, classes)
    evaluated = truth >= 0
    labels = {name: p.load("labels_2d") for name, p in (("none", predict_none), ("both", predict_both))}
    seen = {name: evaluated & (label >= 0) for name, label in labels.items()}
    matched = seen["none"] & seen["both"]
    assert matched.sum() < seen["both"].sum()  # the 3D filter predicts points the unfiltered teacher leaves out

    by_name = {r["name"]: r for r in result["rows"]}
    for name in ("none", "both"):
        row = by_name[name]
        assert 0 <= row["coverage"]["fused"] <= 1 and 0 <= row["coverage"]["student"] <= 1
        assert row["coverage"]["fused"] == pytest.approx(seen[name].sum() / evaluated.sum(), abs=1e-6)
        on_matched = scannet_miou(np.where(matched, truth, -1), labels[name], len(classes))
        assert row["matched_miou"]["fused"] == pytest.approx(on_matched, abs=1e-6)
        assert row["fused_miou"] == pytest.approx(scannet_miou(truth, labels[name], len(classes)), abs=1e-6)
        assert set(row["val"]) >= {"fused_miou", "student_miou", "coverage", "matched_miou"}
        assert set(row["train"]) >= {"fused_miou", "student_miou", "class_iou"}
    assert by_name["none"]["coverage"]["fused"] < by_name["both"]["coverage"]["fused"]
    other_students_and_the_last_rows_evaluation(result, tmp_path, scene)


def other_students_and_the_last_rows_evaluation(result: dict, out, scene: str) -> None:
    """Each row again with the other student input (TINY's student has no use_color: xyz), run
    after it; the store's evaluate is the last row's."""
    rows = {r["name"]: r for r in result["rows"]}
    assert [r["name"] for r in result["rows"]] == ["none", "none, xyz+RGB student", "both", "both, xyz+RGB student"]
    assert [r["student_input"] for r in result["rows"]] == ["xyz", "xyz+RGB", "xyz", "xyz+RGB"]
    assert rows["both, xyz+RGB student"]["fused_miou"] == rows["both"]["fused_miou"]
    assert all(r["validation"]["split"] == "val" and r["validation"]["epochs_run"] == 1 for r in result["rows"])
    assert (out / "curves" / "both--xyz-rgb-student" / "training_curves.png").stat().st_size > 1000
    evaluate = Store(out / "store.zarr").read("global/evaluate")  # the last row's, on split test
    assert evaluate.info["scenes"] == [scene]
    last = rows["both, xyz+RGB student"]
    assert last["fused_miou"] == pytest.approx(evaluate.info["metrics"]["2d"]["miou"], abs=1e-6)
    assert last["student_miou"] == pytest.approx(evaluate.info["metrics"]["3d"]["miou"], abs=1e-6)
