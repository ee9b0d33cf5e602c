"""Early stopping on the validation loss (``models.validation``), alone and in ``distill``."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TINY_STUDENT, tiny_pipeline_plan

from ovlift.cache_schema.groups.lifted import lifted_features
from ovlift.models.student import MinkUNet, sparse_input
from ovlift.models.student_config import StudentConfig
from ovlift.models.validation import Validation
from ovlift.pipeline.plan import PlanError, load_plan, plan_from_dict
from ovlift.pipeline.runner import Runner


def test_validation_keeps_the_first_lowest_epoch_and_stops_after_patience_epochs_without_one():
    layer = torch.nn.Linear(1, 1, bias=False)
    record = Validation("val", ["a"], patience=3)
    for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.0]):  # a tie is no improvement
        layer.weight.data.fill_(epoch)
        record.record(loss, {"layer": layer})
        assert not record.done()
    layer.weight.data.fill_(4)
    record.record(2.1, {"layer": layer})
    assert record.done() and record.best_epoch == 1
    record.publish({"layer": layer})
    assert layer.weight.item() == 1.0  # the best epoch's weights, not the last
    unbounded = Validation("val", ["a"], patience=None)
    for loss in [1.0, 2.0, 3.0, 4.0]:
        unbounded.record(loss, {"layer": layer})
    assert not unbounded.done() and unbounded.info()["published_epoch"] == 3


def test_training_stops_when_the_val_loss_rises_and_publishes_the_best_epochs_weights(tmp_path):
    """The validation scene wants the opposite of what training fits: its loss is lowest after
    the first epoch, so a patience of one stops after the second and publishes the first."""
    from ovlift.models.training import Augment, Losses, SceneData, Schedule, TrainRun, train

    g = torch.Generator().manual_seed(0)
    points = torch.rand((3000, 3), generator=g) * 4
    field = torch.cat([points - 2, torch.ones(len(points), 1)], 1)
    seen = torch.ones(len(points), dtype=torch.bool)
    scene = SceneData("a", points, None, field.half(), seen)
    opposite = SceneData("b", points, None, (-field).half(), seen)
    run = TrainRun(
        StudentConfig(**TINY_STUDENT), 4, Schedule("adam", 0.01, 0.001, "cosine", 0.0), Augment(), Losses(), 6, 1, 0
    )
    record = Validation("val", ["b"], patience=1)
    model, rows = train([scene], run, torch.device("cpu"), tmp_path, ([opposite], record))
    assert record.losses[1] > record.losses[0] and record.best_epoch == 0 and record.done()
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_0000.pt", "epoch_0001.pt"]
    first = torch.load(tmp_path / "epoch_0000.pt", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], first[k]) for k in first)
    assert [r["val_loss"] for r in rows if "val_loss" in r] == record.losses


def reference_val_loss(model_state: dict, points: np.ndarray, targets: np.ndarray, seen: np.ndarray) -> float:
    """Mean over the seen points of 1 - cos(student, teacher), the student gathered point by point."""
    model = MinkUNet(StudentConfig(**TINY_STUDENT), targets.shape[1])
    model.load_state_dict(model_state)
    model.eval()
    with torch.no_grad():
        x, (point_map,) = sparse_input([(torch.from_numpy(points), None)], model.config, torch.device("cpu"))
        per_point = model(x)[point_map]
    cos = F.cosine_similarity(per_point[seen], torch.from_numpy(targets[seen]).float(), dim=1)
    return float((1 - cos).mean())


def test_distill_stops_on_the_val_rooms_loss_and_publishes_the_best_epoch(tmp_path):
    plan_path = tiny_pipeline_plan(
        tmp_path / "plan.yaml", epochs=3, val_split="val", patience=1, label_weight=0.0, lr=0.02
    )
    runner = Runner(load_plan(plan_path))
    runner.run(fail_fast=True)
    distill = runner.store.read("global/distill")
    curve = distill.load("epoch_val_loss")
    info = distill.info["validation"]
    best = int(np.argmin(curve))
    assert info["scenes"] == ["toy_0002"] and distill.info["train_scenes"] == ["toy_0000", "toy_0001"]
    assert info["best_epoch"] == best == info["published_epoch"] and len(curve) == info["epochs_run"]
    assert len(curve) == 3 or len(curve) - 1 - best == 1  # stopped one epoch after the best, or ran out
    assert len(distill.load("epoch_loss")) == len(curve)

    files = Path(distill.info["checkpoints"])
    published = torch.load(io.BytesIO(distill.load("weights").tobytes()), weights_only=True)
    at_best = torch.load(files / f"epoch_{best:04d}.pt", weights_only=True)["model"]
    assert all(torch.equal(published[k], at_best[k]) for k in at_best)
    assert len(list(files.glob("epoch_*.pt"))) == len(curve)  # no epoch after the stop

    groups = {"project": runner.store.read("scenes/toy_0002/project")}
    lifted = lifted_features(groups, "project", None, "scene 'toy_0002'")
    points = runner.store.read("scenes/toy_0002/input").load("points")
    for epoch in (0, len(curve) - 1):
        state = torch.load(files / f"epoch_{epoch:04d}.pt", weights_only=True)["model"]
        expected = reference_val_loss(state, points, lifted.features, lifted.seen)
        assert curve[epoch] == pytest.approx(expected, rel=1e-4)


def test_val_split_must_exist_hold_no_training_scene_and_patience_needs_it(tmp_path):
    data = yaml.safe_load(tiny_pipeline_plan(tmp_path / "plan.yaml").read_text())
    data["stages"]["distill"]["val_split"] = "holdout"
    with pytest.raises(PlanError, match="val_split 'holdout' is not a split of the plan"):
        plan_from_dict(data)
    data["splits"]["holdout"] = ["toy_0001", "toy_0002"]
    with pytest.raises(PlanError, match=r"shares scenes with the training split: \['toy_0001'\]"):
        plan_from_dict(data)
    data["stages"]["distill"].pop("val_split")
    data["stages"]["distill"]["patience"] = 3
    with pytest.raises(PlanError, match="patience needs val_split"):
        plan_from_dict(data)
