"""The label-free rule, whole pipelines: each method's plan on tiny toy scenes runs once on
scenes whose every label and instance array (points and frames, and the label set's class
names) was removed before ``input`` (``conftest.without_ground_truth``) and once on the
labelled scenes; the predictions and the student's features must be identical. Evaluation
needs the ground truth, so it runs on the labelled copy only: the unlabelled store refuses it,
and the labelled copy's labels score the label-free predictions to the labelled run's metrics.

Together the three cover extract2d with both trained teachers (``trained``, ``trained-regions``),
project, segment, objects (region growing), denoise and early stopping on a val room (CUS3D); capability on ``render``
images, capability fusion, superpoint distillation and TESD (SAS); CLIP2Scene's semantic,
spatial-temporal and self-training terms on toy streets with a trained camera teacher."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_STUDENT, plan_without_ground_truth, scannet_miou, scene_truth, toy_plan_dict

from ovlift.cache_schema.groups.predict import PREDICT_SPEC
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner

pytestmark = pytest.mark.slow

GROUND_TRUTH = ("labels", "instances", "frames/labels", "frames/instances")

ROOMS = {"num_scenes": 2, "num_frames": 4, "image_height": 48, "image_width": 64, "vertex_spacing_m": 0.1}
"""Two tiny toy rooms (one to train on, one to evaluate), other rooms than the teacher's."""


def rooms_plan(store, extract2d: dict, **stages) -> dict:
    data = toy_plan_dict(store, **ROOMS)
    data["splits"] = {"train": ["toy_0000"], "val": ["toy_0001"]}
    data["stages"].update({"extract2d": extract2d, "project": {"cut_bound": 1}, **stages})
    data["stages"].update(predict={}, evaluate={})
    return data


def teacher(implementation: str, folder, **fields) -> dict:
    encoding = "masks" if implementation == "trained-regions" else "dense"
    return {
        "implementation": implementation,
        "model_path": str(folder),
        "encoding": encoding,
        "feature_height": 24,
        "feature_width": 32,
        **fields,
    }


def differing_rows(a: np.ndarray, b: np.ndarray) -> int:
    """Rows of two arrays that differ (all of them when the shapes do)."""
    if a.shape != b.shape:
        return max(len(a), len(b))
    return int((a != b).reshape(len(a), -1).any(axis=1).sum())


def run_with_and_without_ground_truth(data: dict, tmp_path) -> tuple[Runner, Runner]:
    """The plan run on labelled scenes through evaluate, and on the same scenes without their
    ground truth through predict; asserts that the second never saw a label and predicts the same."""
    labelled = Runner(plan_from_dict({**data, "store": str(tmp_path / "labelled.zarr")}))
    report = labelled.run()
    assert not report.failed, report.summary()
    unlabelled = Runner(plan_without_ground_truth(plan_from_dict({**data, "store": str(tmp_path / "unlabelled.zarr")})))
    stages = [key for key, sp in unlabelled.plan.stages.items() if sp.name != "evaluate"]
    report = unlabelled.run(stages=stages)
    assert not report.failed, report.summary()
    for scene in unlabelled.store.scene_ids():
        group = unlabelled.store.read(f"scenes/{scene}/input")
        assert not [a for a in GROUND_TRUTH if a in group] and group.info["class_names"] is None, scene
    report = unlabelled.run(stages=["evaluate"])
    assert report.failed and "evaluation needs ground-truth labels" in report.failed[0].error

    arrays = [spec.name for spec in PREDICT_SPEC.arrays]
    rows, differ = dict.fromkeys(arrays, 0), dict.fromkeys(arrays, 0)
    for scene in labelled.store.scene_ids():
        a, b = (r.store.read(f"scenes/{scene}/predict") for r in (labelled, unlabelled))
        if a is None:  # not in predict's split
            continue
        assert {n for n in arrays if n in a} == {n for n in arrays if n in b}, scene
        for name in (n for n in arrays if n in a):
            rows[name] += len(a.load(name))
            differ[name] += differing_rows(a.load(name), b.load(name))
    assert any(rows.values())
    shares = ", ".join(f"{n} {100 * differ[n] / rows[n]:.2f} %" for n in arrays if differ[n])
    assert not shares, f"predictions without ground truth differ (share of points): {shares}"
    # the training and validation curves too: a label read that moves only the val loss
    # (early stopping's evidence) would not always move the published epoch's predictions
    a, b = (r.store.read("global/distill") for r in (labelled, unlabelled))
    for name in ("epoch_loss", "epoch_val_loss"):
        np.testing.assert_array_equal(a.load(name), b.load(name), err_msg=name)
    return labelled, unlabelled


def evaluated_from_the_labelled_copy(labelled: Runner, unlabelled: Runner, predictor: str = "3d") -> None:
    """The label-free run's predictions, scored against the labelled copy's labels, give the
    labelled run's metric (ScanNet's rule; LiDAR scenes on their key sweep)."""
    truth, predicted, classes = [], [], None
    for scene in labelled.plan.splits["val"]:
        scene_input = labelled.store.read(f"scenes/{scene}/input")
        predict = unlabelled.store.read(f"scenes/{scene}/predict")
        classes = predict.info["classes"]
        gt = scene_truth(scene_input, classes)
        truth.append(np.where(scene_input.load("sweep") == 0, gt, -1) if "sweep" in scene_input else gt)
        predicted.append(predict.load(f"labels_{predictor}"))
    assert classes is not None
    expected = labelled.store.read("global/evaluate").info["metrics"][predictor]["miou"]
    got = scannet_miou(np.concatenate(truth), np.concatenate(predicted), len(classes))
    assert got == pytest.approx(expected, abs=1e-6)


def test_cus3d_without_ground_truth_predicts_the_same(trained, tmp_path):
    """CUS3D: the trained mask teacher (regions, the 2D filter), superpoints, objects grown from
    them by their lifted features, the 3D object filter, a student with the label loss."""
    _, folder, _ = trained
    data = rooms_plan(
        tmp_path / "labelled.zarr",
        {"ovseg": teacher("trained-regions", folder, overlap="vote")},
        segment={},
        objects={"source": "region-growing"},
        denoise={},
        distill={
            "source": "denoise",
            "student": {**TINY_STUDENT, "use_color": True},
            "epochs": 2,
            "batch_size": 1,
            "lr": 0.003,
            "label_weight": 1.0,
            "val_split": "val",  # early stopping reads the val room's teacher features
            "patience": 1,
        },
    )
    labelled, unlabelled = run_with_and_without_ground_truth(data, tmp_path)
    for scene in ("toy_0000", "toy_0001"):  # what the filter works on was label-free too
        a, b = (r.store.read(f"scenes/{scene}/denoise") for r in (labelled, unlabelled))
        assert a.oracles == () and a.info["filtered_views"] > 0
        for name in ("object_label", "features"):
            np.testing.assert_array_equal(a.load(name), b.load(name))
    objects = labelled.store.read("scenes/toy_0000/objects")
    assert objects.info["source"] == "region-growing" and 1 < objects.info["count"]
    predict = labelled.store.read("scenes/toy_0001/predict")
    assert "labels_fused_2d" in predict and predict.info["source"] == "denoise"
    evaluated_from_the_labelled_copy(labelled, unlabelled)


def test_sas_without_ground_truth_predicts_the_same(trained, tmp_path, monkeypatch):
    """SAS: two trained teachers (dense and regions), their capability measured on ``render``
    images, capability fusion, superpoint distillation and TESD. ``render`` draws its own
    objects (no scene's): its pseudo masks are its exact masks by design (an oracle of its own
    images, recorded as such); the label-free run also takes away the label and instance images
    it hands the teachers, so neither the teachers nor the scoring can read them."""
    from dataclasses import replace

    from ovlift.models.generators.render import RenderGenerator

    _, folder, _ = trained
    data = rooms_plan(
        tmp_path / "labelled.zarr",
        {"dense": teacher("trained", folder), "regions": teacher("trained-regions", folder)},
        capability={
            "implementation": "render",
            "images_per_class": 1,
            "vocabulary": "scannet20",
            "image_height": 48,
            "image_width": 64,
        },
        segment={},
        fuse={"method": "capability", "vocabulary": "scannet20", "other_class": None},
        distill={
            "source": "fuse",
            "student": TINY_STUDENT,
            "epochs": 2,
            "batch_size": 1,
            "lr": 0.003,
            "superpoints": "segment",
            "superpoint_targets": True,
            "superpoint_weight": 1.0,
            "tesd_start": 0.5,
            "tesd_alpha": 0.99,
            "tesd_bank_dtype": "float32",
        },
    )
    generate = RenderGenerator.generate

    def render_unlabelled(self, class_name):
        # only when the unlabelled run renders (the labelled run has rendered by then)
        return replace(generate(self, class_name), labels=None, instances=None, label_names=None)

    # contact sheets are pictures for people (seconds of matplotlib a class), no stage reads them
    monkeypatch.setattr("ovlift.plots.contact_sheet", lambda *args, **kwargs: None)
    labelled = Runner(plan_from_dict({**data, "store": str(tmp_path / "labelled.zarr")}))
    assert not labelled.run(stages=["capability"]).failed
    monkeypatch.setattr(RenderGenerator, "generate", render_unlabelled)
    labelled, unlabelled = run_with_and_without_ground_truth(data, tmp_path)
    a, b = (r.store.read("global/capability") for r in (labelled, unlabelled))
    np.testing.assert_array_equal(a.load("capability"), b.load("capability"))
    assert 0 < a.load("capability").max()
    fused = labelled.store.read("scenes/toy_0000/fuse")
    assert set(np.unique(fused.load("winner"))) == {-1, 0, 1}  # both teachers win somewhere
    distill = labelled.store.read("global/distill")
    assert distill.info["superpoints"] == "segment" and distill.info["tesd"]["start_epoch"] == 1
    evaluated_from_the_labelled_copy(labelled, unlabelled)


def test_clip2scene_without_ground_truth_predicts_the_same(trained_street, tmp_path):
    """CLIP2Scene on toy streets with a trained camera teacher: the semantic term, the
    spatial-temporal term over two sweeps, and switchable self-training from the second epoch
    (a coin per point, so that every step of it has some)."""
    scenes = ["toy_street_0000", "toy_street_0001"]
    data = {
        "dataset": {
            "name": "toy-street",
            "num_scenes": 2,
            "num_sweeps": 2,
            "azimuth_steps": 128,
            "image_height": 45,
            "image_width": 80,
        },
        "splits": {"train": scenes[:1], "val": scenes[1:]},
        "vocabulary": "nuscenes16",
        "stages": {
            "input": {},
            "extract2d": {"camera": teacher("trained", trained_street, feature_height=45, feature_width=80)},
            "project": {"cut_bound": 2},
            "distill": {
                "implementation": "clip2scene",
                "templates": "single",
                "student": TINY_STUDENT,
                "epochs": 2,
                "batch_size": 2,
                "sweeps": 2,
                "ssr_weight": 1.0,
                "self_training_start": 1,
                "self_training_switch": "point",  # every step of the second epoch self-trains on some points
            },
            "predict": {"vocabulary": "nuscenes16"},
            "evaluate": {},
        },
    }
    labelled, unlabelled = run_with_and_without_ground_truth(data, tmp_path)
    distill = labelled.store.read("global/distill")
    assert 0.2 < distill.info["clip2scene"]["paired_fraction"] < 0.95
    evaluated_from_the_labelled_copy(labelled, unlabelled)
