"""SAS's superpoint distillation and TESD: the regrouped losses against slow per-point references, pseudo
labels and the EMA bank, TESD's effect on training, a bit-identical resume after the switch epoch, and the
distill stage's plan checks and info."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TINY_STUDENT, tiny_pipeline_plan

from ovlift.models.student_config import StudentConfig
from ovlift.models.tesd_bank import checkpoint_bank
from ovlift.models.training import (
    Augment,
    ClassText,
    Losses,
    SceneData,
    Schedule,
    SuperpointBatch,
    Tesd,
    TesdBatch,
    TrainRun,
    bank_entry,
    pseudo_labels,
    superpoint_targets,
    train,
)
from ovlift.pipeline.plan import PlanError, load_plan, plan_from_dict
from ovlift.pipeline.runner import Runner


def compact(ids: torch.Tensor) -> torch.Tensor:
    return torch.unique(ids, return_inverse=True)[1]


def random_batch(seed: int = 0, p: int = 400, v: int = 60, d: int = 12):
    g = torch.Generator().manual_seed(seed)
    voxels = torch.randn(v, d, generator=g, dtype=torch.float64)
    point_voxel = torch.randint(0, v - 10, (p,), generator=g)  # the last voxels hold no point
    targets = torch.randn(p, d, generator=g).half()
    superpoint = compact(torch.randint(0, 40, (p,), generator=g))
    return g, voxels, point_voxel, targets, superpoint


def test_superpoint_loss_equals_the_per_point_reference_and_its_gradient():
    _, voxels, point_voxel, targets, superpoint = random_batch()
    s = int(superpoint.max()) + 1
    scene = SceneData("s", torch.zeros(len(targets), 3), None, targets, torch.ones(len(targets), dtype=torch.bool))
    scene.superpoints = superpoint
    sp = superpoint_targets(scene)
    teacher_means = torch.stack([targets[superpoint == k].double().mean(0) for k in range(s)])
    torch.testing.assert_close(sp.targets.double(), F.normalize(teacher_means, dim=1), atol=1e-6, rtol=1e-5)
    losses = Losses(cosine_weight=0.6, superpoint_weight=0.4)

    def reference(v):  # the obvious per-point form of Eq. 10
        f = v[point_voxel]
        point = (1 - F.cosine_similarity(f, targets.double(), dim=1)).mean()
        student_means = torch.stack([f[superpoint == k].mean(0) for k in range(s)])
        sp_term = (1 - F.cosine_similarity(student_means, teacher_means, dim=1)).mean()
        return 0.6 * point + 0.4 * sp_term, point, sp_term

    fast_in, slow_in = voxels.clone().requires_grad_(), voxels.clone().requires_grad_()
    fast = losses(fast_in, point_voxel, targets, None, None, SuperpointBatch(sp.point_superpoint, sp.targets))
    slow = reference(slow_in)
    torch.testing.assert_close(fast.total, slow[0])
    torch.testing.assert_close(fast.cosine, slow[1])
    torch.testing.assert_close(fast.superpoint, slow[2])
    fast.total.backward()
    slow[0].backward()
    torch.testing.assert_close(fast_in.grad, slow_in.grad)

    # no superpoints (SAS outdoors): every point its own, the superpoint term is the point term
    singletons = losses(voxels, point_voxel, targets, None, None, None)
    torch.testing.assert_close(singletons.superpoint, singletons.cosine)
    assert losses(voxels, point_voxel, targets, None, None, None).label == 0


@pytest.mark.parametrize("replace", [False, True])
def test_tesd_loss_equals_the_per_point_reference_and_its_gradient(replace):
    g, voxels, point_voxel, targets, superpoint = random_batch(1)
    s = int(superpoint.max()) + 1
    prompts = F.normalize(torch.randn(7, voxels.shape[1], generator=g, dtype=torch.float64), dim=1)
    prompt_class = torch.tensor([0, 1, 2, 2, 3, 4, 0])  # synonyms: a class's logit is its best prompt's
    text = ClassText(prompts, prompt_class, 5)
    point_labels, sp_labels = torch.randint(0, 5, (len(point_voxel),), generator=g), torch.randint(0, 5, (s,))
    losses = Losses(cosine_weight=0.5)

    def reference(v):  # Eq. 13 per point, logits cos / tau
        per_prompt = F.normalize(v[point_voxel], dim=1) @ prompts.T / 0.05
        logits = torch.stack([per_prompt[:, prompt_class == c].max(1).values for c in range(5)], 1)
        sp_logits = torch.stack([logits[superpoint == k].mean(0) for k in range(s)])
        tesd = F.cross_entropy(logits, point_labels) + F.cross_entropy(sp_logits, sp_labels)
        cos = (1 - F.cosine_similarity(v[point_voxel], targets.double(), dim=1)).mean()
        return (tesd if replace else 0.5 * cos + tesd), tesd

    fast_in, slow_in = voxels.clone().requires_grad_(), voxels.clone().requires_grad_()
    batch = TesdBatch(point_voxel, point_labels, superpoint, sp_labels, text, 0.05, replace)
    fast, slow = losses(fast_in, point_voxel, targets, None, None, None, batch), reference(slow_in)
    torch.testing.assert_close(fast.total, slow[0])
    torch.testing.assert_close(fast.tesd, slow[1])
    fast.total.backward()
    slow[0].backward()
    torch.testing.assert_close(fast_in.grad, slow_in.grad)


def test_pseudo_labels_and_banks_follow_eq_11_and_12():
    g = torch.Generator().manual_seed(2)
    superpoint = compact(torch.randint(0, 30, (300,), generator=g))
    s = int(superpoint.max()) + 1
    scores = torch.rand(300, 6, generator=g) * 2 - 1
    text = ClassText(torch.eye(6), torch.arange(6), 6)
    sp_mean = torch.stack([scores[superpoint == k].mean(0) for k in range(s)])
    point = Tesd(0, text)
    labels, sp_labels = pseudo_labels(scores, superpoint, point)
    torch.testing.assert_close(labels, scores.argmax(1), rtol=0, atol=0)
    torch.testing.assert_close(sp_labels, sp_mean.argmax(1), rtol=0, atol=0)
    broadcast = Tesd(0, text, point_target="superpoint")
    torch.testing.assert_close(pseudo_labels(scores, superpoint, broadcast)[0], sp_mean.argmax(1)[superpoint])
    sp_bank = Tesd(0, text, point_target="superpoint", bank="superpoint")
    entry = bank_entry(scores, superpoint, sp_bank)
    torch.testing.assert_close(entry, sp_mean)
    labels, sp_labels = pseudo_labels(entry, superpoint, sp_bank)
    torch.testing.assert_close(labels, sp_mean.argmax(1)[superpoint])
    assert pseudo_labels(scores, None, point)[1] is None
    # the superpoint bank is the superpoint mean of the point bank: the EMA is linear
    later = torch.rand(300, 6, generator=g)
    ema_points = 0.9 * bank_entry(scores, superpoint, point) + 0.1 * bank_entry(later, superpoint, point)
    ema_superpoints = 0.9 * entry + 0.1 * bank_entry(later, superpoint, sp_bank)
    torch.testing.assert_close(bank_entry(ema_points, superpoint, sp_bank), ema_superpoints)


def tiny_scenes(count: int = 2, channels: int = 8) -> list[SceneData]:
    """A floor (4 m, 400 points) and a wall (4 x 2 m, 200 points), superpoints = cells of 1 m."""
    g = torch.Generator().manual_seed(5)
    scenes = []
    for i in range(count):
        floor, wall = torch.rand(400, 3, generator=g) * 4, torch.rand(200, 3, generator=g) * torch.tensor([0, 4, 2])
        floor[:, 2] = 0
        points = torch.cat([floor, wall])
        cell = points.long()
        superpoints = compact(cell[:, 0] * 100 + cell[:, 1] * 10 + cell[:, 2])
        targets = (torch.randn(len(points), channels, generator=g) + points[:, :1]).half()
        seen = torch.rand(len(points), generator=g) < 0.8
        scenes.append(SceneData(f"s{i}", points, None, targets, seen, superpoints=superpoints))
    return scenes


def run_train(folder: Path, tesd: Tesd | None, epochs: int = 4, superpoint_weight: float = 1.0):
    run = TrainRun(
        StudentConfig(**{**TINY_STUDENT, "voxel_size_m": 0.1}),
        8,
        Schedule("adam", 0.003, 0.0003, "cosine", 0.0),
        Augment(),
        Losses(superpoint_weight=superpoint_weight),
        epochs,
        1,
        0,
        tesd=tesd,
    )
    return train(tiny_scenes(), run, torch.device("cpu"), folder)


def tesd_config(**kwargs) -> Tesd:
    text = ClassText(
        F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(9)), dim=1), torch.arange(5), 5
    )
    return Tesd(**{"start_epoch": 2, "text": text, "temperature": 0.05, **kwargs})


def test_tesd_changes_training_from_its_start_epoch_and_replace_drops_the_teacher_terms(tmp_path):
    _, plain = run_train(tmp_path / "plain", None, epochs=3)
    _, added = run_train(tmp_path / "add", tesd_config(), epochs=3)
    _, replaced = run_train(tmp_path / "replace", tesd_config(replace=True), epochs=3)
    before = [r for r in added if r["epoch"] < 2]
    assert before == [r for r in plain if r["epoch"] < 2]  # nothing changes before the switch
    assert all(r["tesd_loss"] == 0 for r in plain) and all(r["superpoint_loss"] > 0 for r in plain)
    after = [r for r in added if r["epoch"] >= 2]
    assert after and all(r["tesd_loss"] > 0 for r in after)
    assert [r["loss"] for r in after] != [r["loss"] for r in plain if r["epoch"] >= 2]
    for r in after:  # add (paper): teacher terms + TESD
        assert r["loss"] == pytest.approx(r["cosine_loss"] + r["superpoint_loss"] + r["tesd_loss"], rel=1e-5)
    for r in (r for r in replaced if r["epoch"] >= 2):  # replace (code): TESD alone; the cosine is still logged
        assert r["loss"] == pytest.approx(r["tesd_loss"], rel=1e-6) and r["cosine_loss"] > 0


def test_tesd_resumes_bit_identically_after_a_kill_past_the_switch_epoch(tmp_path, monkeypatch):
    from ovlift.models import training

    tesd = tesd_config(alpha=0.5, bank_dtype=torch.float32, point_target="superpoint")
    model, rows = run_train(tmp_path / "reference", tesd)

    save = training.save_atomically

    def killed_after_epoch_2(obj, path):
        save(obj, path)
        if obj["epoch"] == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(training, "save_atomically", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_train(tmp_path / "killed", tesd)
    monkeypatch.setattr(training, "save_atomically", save)
    assert sorted(p.name for p in (tmp_path / "killed").glob("epoch_*.pt"))[-1] == "epoch_0002.pt"
    at_switch = checkpoint_bank(tmp_path / "killed" / "epoch_0002.pt")  # the bank files after the switch epoch
    resumed_model, resumed_rows = run_train(tmp_path / "killed", tesd)

    assert resumed_rows == rows
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    final = [checkpoint_bank(tmp_path / d / "epoch_0003.pt") for d in ("reference", "killed")]
    assert len(final[0]) == len(final[1]) == 2 and all(torch.equal(a, b) for a, b in zip(*final))
    assert all(not torch.equal(a, b) for a, b in zip(at_switch, final[0]))  # the bank moves with each visit
    assert checkpoint_bank(tmp_path / "reference" / "epoch_0001.pt") is None
    for d in ("reference", "killed"):  # older generations go once a newer checkpoint names its own
        assert [p.name for p in (tmp_path / d / "tesd_bank").iterdir()] == ["epoch_0003"]


def test_tesd_resumes_from_a_checkpoint_that_held_the_bank_and_names_a_missing_bank_file(tmp_path, monkeypatch):
    """A checkpoint written before the bank moved to files held it whole: a run resumed from one writes
    it out and ends where an uninterrupted run ends. A bank generation lacking a scene is an error."""
    import shutil

    from ovlift.models import training

    tesd = tesd_config(start_epoch=1, alpha=0.5, bank_dtype=torch.float32)
    model, rows = run_train(tmp_path / "reference", tesd, epochs=3)
    save = training.save_atomically

    def killed_after_epoch_1(obj, path):
        save(obj, path)
        if obj["epoch"] == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(training, "save_atomically", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run_train(tmp_path / "killed", tesd, epochs=3)
    monkeypatch.setattr(training, "save_atomically", save)
    (tmp_path / "old").mkdir()
    shutil.copy(tmp_path / "killed" / "epoch_0000.pt", tmp_path / "old")
    state = torch.load(tmp_path / "killed" / "epoch_0001.pt", weights_only=True)
    state["tesd_bank"] = checkpoint_bank(tmp_path / "killed" / "epoch_0001.pt")
    del state["tesd_bank_epoch"]
    torch.save(state, tmp_path / "old" / "epoch_0001.pt")
    resumed_model, resumed_rows = run_train(tmp_path / "old", tesd, epochs=3)
    assert resumed_rows == rows and rows[-1]["tesd_loss"] > 0
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name

    (tmp_path / "killed" / "tesd_bank" / "epoch_0001" / "scene_000001.pt").unlink()
    with pytest.raises(FileNotFoundError, match="lacks 1 of 2 scenes .first: scene_000001.pt"):
        run_train(tmp_path / "killed", tesd, epochs=3)


def tesd_plan(tmp_path: Path, **distill) -> dict:
    data = yaml.safe_load(tiny_pipeline_plan(tmp_path / "plan.yaml", epochs=2).read_text())
    del data["stages"]["predict"], data["stages"]["evaluate"]
    data["stages"]["distill"].update({"label_weight": 0.0, **distill})
    return data


def test_the_plan_needs_segment_only_for_segment_superpoints_and_checks_the_bank(tmp_path):
    with pytest.raises(PlanError, match="superpoints 'segment' needs the segment stage"):
        plan_from_dict(tesd_plan(tmp_path, superpoints="segment"))
    plan = plan_from_dict(tesd_plan(tmp_path, superpoints="none", superpoint_weight=1.0, tesd_start=0.5))
    assert "segment" not in plan.upstream("distill")
    data = tesd_plan(tmp_path, superpoints="none")
    data["stages"]["segment"] = {}
    assert "segment" not in plan_from_dict(data).upstream("distill")  # configured, but not read
    with pytest.raises(PlanError, match="tesd_point_target 'superpoint'"):
        plan_from_dict(tesd_plan(tmp_path, tesd_start=0.5, tesd_bank="superpoint"))


def test_distill_stage_runs_sas_with_segment_superpoints_and_reports_tesd(tmp_path):
    data = tesd_plan(
        tmp_path,
        superpoints="segment",
        superpoint_targets=True,
        superpoint_weight=1.0,
        tesd_start=0.5,
        tesd_point_target="superpoint",
        tesd_bank="superpoint",
    )
    data["stages"]["segment"] = {"min_vertices": 5}
    plan_path = tmp_path / "sas.yaml"
    plan_path.write_text(yaml.safe_dump(data))
    runner = Runner(load_plan(plan_path))
    runner.run(fail_fast=True)
    group = runner.store.read("global/distill")
    assert group.info["superpoints"] == "segment"
    tesd = group.info["tesd"]
    assert tesd["start_epoch"] == 1 and tesd["classes"][0] == "wall" and tesd["vocabulary"].startswith("scannet20")
    log = (Path(group.info["checkpoints"]) / "training_log.csv").read_text().splitlines()
    assert log[0] == "epoch,step,loss,cosine_loss,label_loss,lr,superpoint_loss,tesd_loss,val_loss"
    column = log[0].split(",").index("tesd_loss")
    tesd_loss = [float(line.split(",")[column]) for line in log[1:]]
    assert tesd_loss[:2] == [0.0, 0.0] and all(x > 0 for x in tesd_loss[2:])
    bank = checkpoint_bank(Path(group.info["checkpoints"]) / "epoch_0001.pt")
    sizes = [runner.store.read(f"scenes/{s}/segment").info["count"] for s in group.info["train_scenes"]]
    assert [b.shape for b in bank] == [(n, 20) for n in sizes] and bank[0].dtype == torch.float16


@pytest.mark.slow
def test_tesd_bank_is_shared_by_two_cpu_processes(tmp_path):
    """DDP (Gloo): each rank updates the scenes it trained on and sends them to the other, so rank 0's
    bank files hold every scene's update (3 scenes in batches of 2: rank 1 trains on one scene an epoch)."""
    data = tesd_plan(tmp_path, epochs=3, tesd_start=0.34, tesd_alpha=0.5, tesd_bank_dtype="float32", batch_size=2)
    data["splits"]["train"] = ["toy_0000", "toy_0001", "toy_0002"]
    plan_path = tmp_path / "ddp.yaml"
    plan_path.write_text(yaml.safe_dump(data))
    Runner(load_plan(plan_path)).run(stages=["input", "extract2d", "project"], fail_fast=True)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", "-m", "ovlift.pipeline.cli"]
        + ["run", str(plan_path), "--stages", "distill"],
        env=dict(os.environ, OVLIFT_PROGRESS="0"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    group = Runner(load_plan(plan_path)).store.read("global/distill")
    assert group.info["tesd"]["start_epoch"] == 1
    files = Path(group.info["checkpoints"])
    bank = checkpoint_bank(files / "epoch_0002.pt")
    assert bank is not None and len(bank) == 3 and all(torch.isfinite(b).all() for b in bank)
    written = [(files / "tesd_bank" / "epoch_0002" / f"scene_{i:06d}.pt").stat().st_mtime_ns for i in range(3)]
    assert min(written) > (files / "epoch_0001.pt").stat().st_mtime_ns  # in epoch 2: rank 1's scene too
