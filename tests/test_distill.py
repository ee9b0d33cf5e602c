"""Distillation end to end on tiny toy scenes: checkpoints, resume, predict, evaluate."""

import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_pipeline_plan
from test_metrics import scannet_miou

from ovlift.pipeline.plan import PlanError, load_plan, plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.ply import read_ply


def test_voxel_regrouped_losses_equal_the_per_point_losses_and_their_gradients():
    import torch
    import torch.nn.functional as F

    from ovlift.models.training import ClassText, Losses

    g = torch.Generator().manual_seed(3)
    voxels, prompts = (
        torch.randn(60, 16, generator=g, dtype=torch.float64),
        torch.randn(7, 16, generator=g, dtype=torch.float64),
    )
    prompt_class = torch.tensor([0, 1, 2, 2, 3, 4, 0])  # synonyms: a class's logit is its best prompt's
    point_voxel = torch.randint(0, 50, (500,), generator=g)  # voxels 50..59 hold no point
    targets, labels = torch.randn(500, 16, generator=g).half(), torch.randint(0, 5, (500,), generator=g)
    losses = Losses(cosine_weight=0.7, label_weight=0.3, label_temperature=0.1)

    def per_point(v):  # the obvious form: gather voxel features to points
        f = v[point_voxel]
        cos = (1 - F.cosine_similarity(f, targets.double(), dim=1)).mean()
        per_prompt = F.normalize(f, dim=1) @ prompts.T / 0.1
        logits = torch.stack([per_prompt[:, prompt_class == c].max(1).values for c in range(5)], 1)
        ce = F.cross_entropy(logits, labels)
        return 0.7 * cos + 0.3 * ce, cos, ce

    for text_classes in ((prompts, prompt_class, 5), (prompts[:5], torch.arange(5), 5)):
        text = ClassText(*text_classes)
        if text_classes[2] == len(text_classes[1]):  # one prompt per class: the fast path
            prompts, prompt_class = text_classes[0], text_classes[1]
        fast_in, slow_in = voxels.clone().requires_grad_(), voxels.clone().requires_grad_()
        fast, slow = losses(fast_in, point_voxel, targets, labels, text), per_point(slow_in)
        for a, b in zip(fast, slow):
            torch.testing.assert_close(a, b)
        fast[0].backward()
        slow[0].backward()
        torch.testing.assert_close(fast_in.grad, slow_in.grad)
        assert fast_in.grad[50:].abs().max() == 0


def test_every_rank_gets_scenes_and_each_real_scene_counts_once():
    from ovlift.models.training import rank_share

    for size in (1, 2, 3, 4):
        for n in range(1, 2 * size + 2):  # a step's scenes, fewer to more than the ranks
            step = [7 * i + 3 for i in range(n)]
            shares = [rank_share(step, rank, size) for rank in range(size)]
            assert all(scenes and len(scenes) == len(weights) for scenes, weights in shares)  # no rank skips
            real = [i for scenes, weights in shares for i, w in zip(scenes, weights) if w]
            assert sorted(real) == step and sum(sum(weights) for _, weights in shares) == n
            assert all(set(weights) <= {0.0, 1.0} for _, weights in shares)
            if size == 1:
                assert shares == [(step, [1.0] * n)]  # a single process trains on the whole step, as before


def distill_group(plan_path: Path):
    plan = load_plan(plan_path)
    return Runner(plan).store.read("global/distill")


@pytest.mark.slow
def test_killed_distillation_resumes_and_ends_like_an_uninterrupted_run(tmp_path, caplog):
    """With validation on: its record (curve, best epoch and weights) rides in the checkpoints."""
    reference = tiny_pipeline_plan(tmp_path / "reference.yaml", val_split="val")
    assert Runner(load_plan(reference)).run(fail_fast=True).counts()["ran"] == 3 * 3 + 1 + 3 + 1

    killed = tiny_pipeline_plan(tmp_path / "killed.yaml", val_split="val")
    Runner(load_plan(killed)).run(stages=["input", "extract2d", "project"], fail_fast=True)
    env = dict(os.environ, OVLIFT_PROGRESS="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovlift.pipeline.cli", "run", str(killed), "--stages", "distill"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pattern = str(tmp_path / "killed.zarr.files" / "global" / "distill" / "*" / "epoch_*.pt")
    deadline = time.time() + 120
    while not glob.glob(pattern) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(glob.glob(pattern))
    assert 1 <= done_before < 6, "the kill should land after the first checkpoint and before the last"
    assert distill_group(killed) is None  # nothing published by the killed run

    with caplog.at_level(logging.INFO, logger="ovlift"):
        report = Runner(load_plan(killed)).run(fail_fast=True)
    assert report.counts() == {"cached": 3 * 3, "ran": 1 + 3 + 1}
    resumed = [r.getMessage() for r in caplog.records if "distill: resuming from" in r.getMessage()]
    assert len(resumed) == 1 and f"(epoch {done_before} of 6)" in resumed[0]  # only the remaining epochs ran
    a, b = distill_group(reference), distill_group(killed)
    np.testing.assert_array_equal(a.load("epoch_loss"), b.load("epoch_loss"))
    np.testing.assert_array_equal(a.load("epoch_val_loss"), b.load("epoch_val_loss"))
    assert np.isfinite(a.load("epoch_val_loss")).all() and a.info["validation"] == b.info["validation"]
    assert a.load("weights").tobytes() == b.load("weights").tobytes()  # bit-identical weights
    ref_metrics = Runner(load_plan(reference)).store.read("global/evaluate").info["metrics"]
    assert Runner(load_plan(killed)).store.read("global/evaluate").info["metrics"] == ref_metrics


def test_end_to_end_outputs_report_and_reruns_cached(tmp_path, caplog):
    plan_path = tiny_pipeline_plan(tmp_path / "plan.yaml", epochs=2)
    runner = Runner(load_plan(plan_path))
    runner.run(fail_fast=True)
    distill = runner.store.read("global/distill")
    assert distill.info["train_scenes"] == ["toy_0000", "toy_0001"] and distill.load("epoch_loss").shape == (2,)
    files = Path(distill.info["checkpoints"])
    assert (files / "training_log.csv").read_text().startswith("epoch,step,loss,cosine_loss,label_loss,lr")
    assert (files / "training_curves.png").stat().st_size > 1000
    predict = runner.store.read("scenes/toy_0002/predict")
    n = runner.store.read("scenes/toy_0002/input").dims["N"]
    assert predict.array("features_3d").shape == (n, 384)
    labels_2d, from_2d = predict.load("labels_2d"), predict.load("ensemble_from_2d")
    ensemble = predict.load("labels_ensemble")
    np.testing.assert_array_equal(ensemble[from_2d], labels_2d[from_2d])
    np.testing.assert_array_equal(ensemble[~from_2d], predict.load("labels_3d")[~from_2d])
    assert not from_2d[labels_2d < 0].any()  # unseen points fall back to 3D
    evaluate = runner.store.read("global/evaluate")
    assert evaluate.info["scenes"] == ["toy_0002"]
    report = Path(evaluate.info["report"])
    metrics = json.loads((report / "report.json").read_text())["metrics"]
    assert set(metrics) == {"2d", "3d", "ensemble"} and metrics["2d"]["hiou"] is not None
    scene = runner.store.read("scenes/toy_0002/input")
    to_vocab = np.array([evaluate.info["classes"].index(c) for c in scene.info["class_names"]] + [-1])
    truth = to_vocab[scene.load("labels").astype(np.int64)]
    for p in ("2d", "3d", "ensemble"):  # the report's mIoU is ScanNet's, computed independently
        reference = scannet_miou(truth, predict.load(f"labels_{p}"), list(range(len(evaluate.info["classes"]))))
        assert metrics[p]["miou"] == pytest.approx(reference, abs=1e-6)
    assert "ScanNet's rule" in (report / "metrics.md").read_text() and evaluate.info["classes_without_ground_truth"]
    assert "| fused 2D |" in (report / "metrics.md").read_text()
    assert (report / "confusion_3d.png").stat().st_size > 1000
    assert Runner(load_plan(plan_path)).run().counts() == {"cached": 3 * 3 + 1 + 3 + 1}
    with caplog.at_level(logging.INFO, logger="ovlift"):  # --force retrains from scratch
        forced = Runner(load_plan(plan_path)).run(stages=["distill"], force=["distill"])
    assert forced.counts() == {"cached": 3 * 3, "ran": 1}  # upstream up to date: hits
    assert not any("resuming" in r.getMessage() for r in caplog.records)
    assert len(glob.glob(str(files) + ".before-force-*/epoch_0001.pt")) == 1  # moved aside, not reused
    assert sorted(p.name for p in files.glob("epoch_*.pt")) == ["epoch_0000.pt", "epoch_0001.pt"]

    from typer.testing import CliRunner

    from ovlift.pipeline.cli import app

    store = str(tmp_path / "plan.zarr")
    result = CliRunner().invoke(
        app, ["query", "--store", store, "--scene", "toy_0002", "a table", "--out", str(tmp_path / "q")]
    )
    assert result.exit_code == 0, result.output
    ply = read_ply(tmp_path / "q" / "toy_0002_a_table_student.ply")
    assert len(ply.points) == n and ply.colors is not None
    assert ply.vertex_properties["similarity"].max() <= 1.0 + 1e-6
    assert (tmp_path / "q" / "toy_0002_a_table_student.png").exists()
    result = CliRunner().invoke(app, ["query", "--store", store, "--scene", "toy_0099", "a table"])
    assert result.exit_code == 2 and "no scene 'toy_0099'" in result.output
    status = CliRunner().invoke(app, ["status", "--store", store, "--plan", str(plan_path), "--json"])
    rows = [json.loads(line) for line in status.output.splitlines()]
    # the forced distill is a new version: what read the old one is stale (status names the
    # direct readers; a run reruns them, and evaluate after them)
    stale = {r["path"]: r["reason"] for r in rows if r["state"] == "stale"}
    assert set(stale) == {f"scenes/toy_000{i}/predict" for i in range(3)}
    assert stale["scenes/toy_0000/predict"] == "its input global/distill was recomputed since"
    assert {r["state"] for r in rows if r["path"] not in stale} == {"cached"}


def test_a_stage_needing_an_undefined_split_is_a_plan_error(tmp_path):
    data = yaml.safe_load(tiny_pipeline_plan(tmp_path / "plan.yaml").read_text())
    del data["splits"]
    with pytest.raises(PlanError, match="stages.distill uses split 'train', which the plan does not define"):
        plan_from_dict(data)


@pytest.mark.slow
def test_distillation_runs_under_torchrun_with_two_cpu_processes(tmp_path):
    """DDP (Gloo on the CPU): both ranks train in step and publish the same group. Three train scenes in
    batches of two leave rank 1 without a scene in each epoch's last step: it pads with a zero-weight one."""
    plan_path = tiny_pipeline_plan(tmp_path / "plan.yaml", epochs=2, num_scenes=4)
    plan_path.write_text(plan_path.read_text().replace("batch_size: 1", "batch_size: 2"))
    Runner(load_plan(plan_path)).run(stages=["input", "extract2d", "project"], fail_fast=True)
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "-m",
            "ovlift.pipeline.cli",
            "run",
            str(plan_path),
            "--stages",
            "distill",
        ],
        env=dict(os.environ, OVLIFT_PROGRESS="0"),
        capture_output=True,
        text=True,
        timeout=300,  # a rank left waiting on the other hangs: fail, not block
    )
    assert done.returncode == 0, done.stderr[-2000:]
    group = distill_group(plan_path)
    assert group is not None and group.load("epoch_loss").shape == (2,)
    files = Path(group.info["checkpoints"])
    assert sorted(p.name for p in files.glob("epoch_*.pt")) == ["epoch_0000.pt", "epoch_0001.pt"]
    log_rows = (files / "training_log.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in log_rows] == [["0", "0"], ["0", "1"], ["1", "2"], ["1", "3"]]
    assert Runner(load_plan(plan_path)).run().counts() == {"cached": 4 * 3 + 1, "ran": 4 + 1}
