"""OpenScene's released fused features in (``project`` implementation ``released``) and
out (``ovlift export``): files written here in OpenScene's layout at its real width
(768-d float16), imported, carried through CUS3D's filter, distillation, prediction and
evaluation, exported and imported again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_STUDENT, toy_plan_dict
from tiny_models import clip_folder

from ovlift.cache_schema.groups.project import fused_features
from ovlift.errors import StageInputError
from ovlift.openscene_files import fused_files, read_fused, read_fused_file

WIDTH = 768  # OpenSeg's


@pytest.fixture(scope="module")
def clip768(tmp_path_factory) -> str:
    """A tiny random CLIP whose text tower embeds 768-d, like ViT-L/14@336px."""
    return str(clip_folder(tmp_path_factory.mktemp("models") / "clip-768", projection_dim=WIDTH))


def write_openscene_file(path: Path, features: np.ndarray, mask_full: np.ndarray, numpy_mask: bool = False) -> None:
    """Exactly what OpenScene's ``save_fused_feature`` saves."""
    mask = torch.from_numpy(mask_full)
    torch.save(
        {"feat": torch.from_numpy(features[mask_full]).half(), "mask_full": mask_full if numpy_mask else mask}, path
    )


def teacher_bank(scene, clip: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in OpenSeg bank for a test scene: each point's class embedding plus noise (the
    test writes the files a teacher would have; ovlift only reads them), 15 % of points unseen."""
    from ovlift.models.text import TextEncoderConfig, load_text_encoder
    from ovlift.vocabularies import get_vocabulary

    vocab = get_vocabulary("scannet20")  # the plan's, whose classes the toy labels index
    assert tuple(scene.info["class_names"]) == vocab.classes
    prompts = load_text_encoder(TextEncoderConfig(kind="clip", path=clip)).embed_names(list(vocab.prompts)).numpy()
    classes = prompts[[vocab.prompt_class.index(c) for c in range(len(vocab.classes))]]  # each class's first prompt
    labels = scene.load("labels").astype(np.int64)
    rng = np.random.default_rng(seed)
    bank = np.where(labels[:, None] >= 0, classes[np.maximum(labels, 0)], rng.normal(size=(len(labels), WIDTH)) * 0.03)
    bank = bank + rng.normal(scale=0.002, size=bank.shape)
    seen = rng.random(len(labels)) > 0.15
    return np.where(seen[:, None], bank, 0).astype(np.float16), seen


def released_plan(
    path: Path, features: Path, clip: str, denoise: bool = True, file: int | None = None, store: Path | None = None
) -> Path:
    data = toy_plan_dict(
        store or path.parent / f"{path.stem}.zarr",
        num_scenes=3,
        num_frames=4,
        image_height=48,
        image_width=64,
        vertex_spacing_m=0.1,
    )
    data["splits"] = {"train": ["toy_0000", "toy_0001"], "val": ["toy_0002"]}
    project = {
        "implementation": "released",
        "path": str(features),
        "teacher": "openseg",
        "channels": WIDTH,
        "text": {"kind": "clip", "path": clip},
    }
    if file is not None:
        project["file"] = file
    data["stages"].update({"project": project})
    if denoise:
        data["stages"].update(
            {
                "segment": {},
                "objects": {"feature_similarity": 0.995},  # the tiny CLIP's class embeddings lie close
                "denoise": {"observations": "fused"},
                "distill": {"student": TINY_STUDENT, "epochs": 2, "batch_size": 1, "lr": 0.003, "source": "denoise"},
                "predict": {},
                "evaluate": {},
            }
        )
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def released(tmp_path_factory, clip768):
    """Three toy rooms, their OpenScene files and the whole plan run on them once. The two
    training rooms have 3 random files each (subsets of one bank, like OpenScene's 5), the
    held-out room one file of every seen point."""
    from ovlift.pipeline.plan import load_plan
    from ovlift.pipeline.runner import Runner

    root = tmp_path_factory.mktemp("released")
    folder = root / "scannet_multiview_openseg"
    folder.mkdir()
    runner = Runner(load_plan(released_plan(root / "released.yaml", folder, clip768)))
    assert not runner.run(stages=["input"]).failed
    banks = {}
    rng = np.random.default_rng(0)
    for i, scene_id in enumerate(["toy_0000", "toy_0001", "toy_0002"]):
        bank, seen = teacher_bank(runner.store.read(f"scenes/{scene_id}/input"), clip768, i)
        banks[scene_id] = (bank, seen)
        n = len(seen)
        for k in range(1 if i == 2 else 3):
            subset = np.zeros(n, dtype=bool)
            subset[rng.choice(n, n if i == 2 else n // 2, replace=False)] = True
            write_openscene_file(folder / f"{scene_id}_{k}.pt", bank, subset & seen, numpy_mask=k == 1)
    report = runner.run()
    assert not report.failed, [o.error for o in report.failed]
    return root, folder, banks, runner


def expected_union(folder: Path, scene_id: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The union of a scene's files, point by point (slow and obvious)."""
    total, count = np.zeros((n, WIDTH)), np.zeros(n)
    for path in sorted(folder.glob(f"{scene_id}_*.pt")):
        data = torch.load(path, weights_only=False)
        mask = np.asarray(data["mask_full"])
        for row, point in enumerate(np.flatnonzero(mask)):
            total[point] += data["feat"][row].float().numpy()
            count[point] += 1
    seen = count > 0
    total[seen] /= count[seen, None]
    return total.astype(np.float16), seen


def test_released_features_run_through_denoise_distill_predict_evaluate(tmp_path, released, clip768):
    from ovlift.pipeline.plan import load_plan
    from ovlift.pipeline.runner import Runner

    root, folder, banks, runner = released
    store = runner.store
    for scene_id, (bank, seen) in banks.items():
        project = store.read(f"scenes/{scene_id}/project")
        want, want_seen = expected_union(folder, scene_id, len(seen))
        assert np.array_equal(project.load("fused/openseg/seen"), want_seen)
        assert np.array_equal(fused_features(project, "openseg"), want)
        assert np.array_equal(fused_features(project, "openseg")[want_seen], bank[want_seen])  # one bank
        assert project.info["imported"]["openseg"] == [p.name for p in fused_files(folder, scene_id)]
        assert project.info["teachers"]["openseg"]["channels"] == WIDTH
    denoise = store.read("scenes/toy_0000/denoise")
    assert denoise.load("seen").sum() > store.read("scenes/toy_0000/project").load("fused/openseg/seen").sum()
    for scene_id in banks:  # the class embeddings, read back through ovlift's classifier
        seen = store.read(f"scenes/{scene_id}/project").load("fused/openseg/seen")
        truth = store.read(f"scenes/{scene_id}/input").load("labels")
        fused_labels = store.read(f"scenes/{scene_id}/predict").load("labels_fused_2d")
        scored = seen & (truth >= 0)
        assert (fused_labels[scored] == truth[scored]).mean() > 0.99
        assert (fused_labels[~seen] < 0).all()
    from ovlift.query import query_scene

    chair = query_scene(store, "toy_0000", "a chair", source="fused")  # the text space the plan named
    truth, seen = store.read("scenes/toy_0000/input").load("labels"), np.isfinite(chair.similarity)
    assert chair.source == "fused/openseg" and np.array_equal(
        seen, store.read("scenes/toy_0000/project").load("fused/openseg/seen")
    )
    best = np.argsort(-np.where(seen, chair.similarity, -2))[:100]
    assert (truth[best] == list(store.read("scenes/toy_0000/input").info["class_names"]).index("chair")).all()
    metrics = store.read("global/evaluate").info["metrics"]
    assert set(metrics) == {"fused_2d", "2d", "3d", "ensemble"} and metrics["2d"]["miou"] > 0.8

    assert {o.status for o in Runner(load_plan(root / "released.yaml")).run(stages=["project"]).outcomes} == {"cached"}
    copy = tmp_path / "features"
    shutil.copytree(folder, copy)  # moved: still cached (the contents are fingerprinted, not the folder)
    plan = released_plan(tmp_path / "moved.yaml", copy, clip768, store=root / "released.zarr")
    assert {o.status for o in Runner(load_plan(plan)).run(stages=["project"]).outcomes} == {"cached"}
    features = torch.load(copy / "toy_0001_0.pt", weights_only=True)
    features["feat"][0, 0] += 1
    torch.save(features, copy / "toy_0001_0.pt")  # changed: only that room reruns
    again = Runner(load_plan(plan)).run(stages=["project"])
    assert {o.scene_id: o.status for o in again.outcomes if o.stage == "project"} == {
        "toy_0000": "cached",
        "toy_0001": "ran",
        "toy_0002": "cached",
    }


def test_export_then_import_gives_the_same_features(tmp_path, released, clip768):
    from ovlift.pipeline.export import export_store
    from ovlift.pipeline.plan import load_plan
    from ovlift.pipeline.runner import Runner

    first = released[3]
    out = tmp_path / "export"
    written = export_store(first.store, out, None)
    assert {p.relative_to(out).parts[0] for p in written} == {
        "fused",
        "denoised",
        "saved_feature",
        "predictions",
        "labelset.json",
    }
    assert (
        json.loads((out / "labelset.json").read_text())["classes"]
        == first.store.read("scenes/toy_0000/predict").info["classes"]
    )

    second = Runner(load_plan(released_plan(tmp_path / "second.yaml", out / "fused" / "openseg", clip768, False)))
    assert not second.run().failed
    for scene_id in ("toy_0000", "toy_0001", "toy_0002"):
        a, b = (r.store.read(f"scenes/{scene_id}/project") for r in (first, second))
        assert np.array_equal(fused_features(a, "openseg"), fused_features(b, "openseg")), scene_id
        for name in ("fused/openseg/seen", "view_count"):
            assert np.array_equal(a.load(name), b.load(name)), (scene_id, name)
        predict = first.store.read(f"scenes/{scene_id}/predict")
        student = np.load(out / "saved_feature" / f"{scene_id}_openscene_feat_distill.npy")
        assert np.array_equal(student, predict.load("features_3d"))
        labels = np.load(out / "predictions" / f"{scene_id}_ensemble.npy")
        want = predict.load("labels_ensemble")
        assert labels.dtype == np.uint8 and np.array_equal(
            np.where(labels == 255, -1, labels), np.where(want < 0, -1, want)
        )
        denoised = read_fused_file(out / "denoised" / "openseg" / f"{scene_id}_0.pt", len(want), WIDTH, scene_id)
        group = first.store.read(f"scenes/{scene_id}/denoise")
        assert np.array_equal(denoised[0].numpy(), np.flatnonzero(group.load("seen")))
        assert np.array_equal(denoised[1].numpy(), group.load("features")[group.load("seen")])

    from typer.testing import CliRunner

    from ovlift.pipeline.cli import app

    result = CliRunner().invoke(app, ["export", first.store.url, str(tmp_path / "cli"), "--what", "fused,student"])
    assert result.exit_code == 0 and "wrote 6 files" in result.output, result.output
    result = CliRunner().invoke(
        app, ["export", first.store.url, str(tmp_path / "nu"), "--what", "fused", "--plain-names"]
    )
    assert (
        result.exit_code == 0 and (tmp_path / "nu" / "fused" / "openseg" / "toy_0002.pt").is_file()
    )  # nuScenes' names
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(app, ["export", first.store.url, str(tmp_path / "file" / "out")])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output, result.output
    result = CliRunner().invoke(app, ["export", first.store.url, str(tmp_path / "cli"), "--scenes", "../x"])
    assert result.exit_code == 2 and "scene id '../x' cannot name a folder" in result.output, result.output


def test_bad_files_are_named(tmp_path):
    n = 50
    bank = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float16)
    seen = np.arange(n) % 3 > 0
    write_openscene_file(tmp_path / "s_0.pt", bank, seen)
    with pytest.raises(
        StageInputError, match=r"scene 's', file 's_0.pt': 'mask_full' covers 50 points, the scene has 60"
    ):
        read_fused([tmp_path / "s_0.pt"], 60, 8, "scene 's'")
    with pytest.raises(StageInputError, match="'feat' has 8 channels, the plan says 768"):
        read_fused([tmp_path / "s_0.pt"], n, 768, "scene 's'")
    torch.save({"feat": torch.zeros(3, 8)}, tmp_path / "t.pt")
    with pytest.raises(StageInputError, match=r"expected a dict with 'feat' and 'mask_full'.*found \['feat'\]"):
        read_fused_file(tmp_path / "t.pt", n, 8, "scene 't'")
    (tmp_path / "u.pt").write_bytes(b"not a torch file")
    with pytest.raises(StageInputError, match="cannot read .*u.pt"):
        read_fused_file(tmp_path / "u.pt", n, 8, "scene 'u'")

    class Hostile:
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save({"feat": Hostile(), "mask_full": torch.ones(n, dtype=torch.bool)}, tmp_path / "v.pt")
    with pytest.raises(StageInputError, match="cannot read .*v.pt"):
        read_fused_file(tmp_path / "v.pt", n, 8, "scene 'v'")
    # the older layout: a row per mask_full point, 'mask' lists those with a feature
    chunk = np.flatnonzero(seen)
    visible = np.arange(0, len(chunk), 2)
    torch.save(
        {"feat": torch.from_numpy(bank[chunk]), "mask": torch.from_numpy(visible), "mask_full": torch.from_numpy(seen)},
        tmp_path / "w.pt",
    )
    points, feat = read_fused_file(tmp_path / "w.pt", n, 8, "scene 'w'")
    assert np.array_equal(points.numpy(), chunk[visible]) and np.array_equal(feat.numpy(), bank[chunk[visible]])
    for name in (
        "scene0000_00_0.pt",
        "scene0000_00_10.pt",
        "scene0000_00_2.pt",
        "scene0000_00.pt",
        "scene0000_001_0.pt",
        "scene0000_00_x.pt",
    ):
        (tmp_path / name).touch()
    assert [p.name for p in fused_files(tmp_path, "scene0000_00")] == [
        "scene0000_00.pt",
        "scene0000_00_0.pt",
        "scene0000_00_2.pt",
        "scene0000_00_10.pt",
    ]


def test_wrong_text_width_missing_files_and_wrong_point_count_fail_clearly(tmp_path, released, clip768):
    from ovlift.pipeline.plan import load_plan
    from ovlift.pipeline.runner import Runner

    folder = released[1]
    store = tmp_path / "errors.zarr"  # one ingest for the three plans
    plan = yaml.safe_load(released_plan(tmp_path / "p.yaml", folder, clip768, False, store=store).read_text())
    plan["stages"]["project"]["text"] = {"kind": "minilm"}
    (tmp_path / "minilm.yaml").write_text(yaml.safe_dump(plan))
    report = Runner(load_plan(tmp_path / "minilm.yaml")).run(scenes=["toy_0000"])
    assert "embeds 384-d, the features are 768-d" in report.failed[0].error

    plan = released_plan(tmp_path / "seven.yaml", folder, clip768, False, file=7, store=store)
    report = Runner(load_plan(plan)).run(scenes=["toy_0000"])
    assert "no feature file 'toy_0000_7.pt'" in report.failed[0].error

    other = tmp_path / "other"
    other.mkdir()
    write_openscene_file(other / "toy_0000_0.pt", np.zeros((10, WIDTH), np.float16), np.ones(10, bool))
    plan = released_plan(tmp_path / "other.yaml", other, clip768, False, store=store)
    report = Runner(load_plan(plan)).run(scenes=["toy_0000"])
    error = report.failed[0].error
    assert "scene 'toy_0000', file 'toy_0000_0.pt': 'mask_full' covers 10 points, the scene has" in error


def test_union_of_files_is_the_mean_where_they_overlap(tmp_path):
    rng = np.random.default_rng(1)
    n, c = 40, 6
    a, b = rng.normal(size=(n, c)).astype(np.float16), rng.normal(size=(n, c)).astype(np.float16)
    in_a, in_b = rng.random(n) > 0.4, rng.random(n) > 0.4
    write_openscene_file(tmp_path / "s_0.pt", a, in_a)
    write_openscene_file(tmp_path / "s_1.pt", b, in_b, numpy_mask=True)
    features, seen = read_fused(fused_files(tmp_path, "s"), n, c, "scene 's'")
    for p in range(n):
        views = [f.astype(np.float32) for f, has in ((a[p], in_a[p]), (b[p], in_b[p])) if has]
        assert seen[p] == bool(views)
        want = np.mean(views, axis=0).astype(np.float16) if views else np.zeros(c, np.float16)
        assert np.array_equal(features[p], want), p


def test_the_committed_plan_runs_on_openscene_data_and_its_released_features(tmp_path, monkeypatch):
    """plans/openscene-released-scannet.yaml on OpenScene's layout (320x240 frames, 768-d float16
    features; 40,000 points a scan, a quarter of ScanNet's, to keep the suite short: the reader's
    tests, tests/test_openscene_dataset.py, run at 150,000): OpenScene's files in, the student out."""
    from openscene_layout import box_room, camera_pose, write_scannet_scene

    from ovlift.models.text import TextEncoderConfig, load_text_encoder
    from ovlift.pipeline.plan import load_plan
    from ovlift.pipeline.runner import Runner
    from ovlift.vocabularies import get_vocabulary

    data, models = tmp_path / "data", tmp_path / "models"
    clip = str(clip_folder(models / "clip-vit-large-patch14-336", projection_dim=WIDTH))
    vocab = get_vocabulary("scannet20")
    embedded = load_text_encoder(TextEncoderConfig(kind="clip", path=clip)).embed_names(list(vocab.prompts)).numpy()
    classes = embedded[[vocab.prompt_class.index(c) for c in range(len(vocab.classes))]]
    (data / "scannet_multiview_openseg").mkdir(parents=True)
    rooms = {}
    for i, (scene_id, split) in enumerate([("scene0000_00", "train"), ("scene0011_00", "val")]):
        room = rooms[scene_id] = box_room(40_000, seed=i)
        views = [(k, camera_pose((3.0, 2.5, 1.5), yaw)) for k, yaw in enumerate((0, 90, 180, 270))]
        write_scannet_scene(data, scene_id, room, views, split=split)
        seen = room.labels >= 0  # a teacher that saw every labelled point, with its class
        bank = classes[np.maximum(room.labels, 0)].astype(np.float16)
        write_openscene_file(data / "scannet_multiview_openseg" / f"{scene_id}_0.pt", bank, seen)
    monkeypatch.setenv("OPENSCENE_DATA", str(data))
    monkeypatch.setenv("OVLIFT_MODELS", str(models))
    monkeypatch.setenv("OVLIFT_WORK", str(tmp_path / "work"))
    distill = {"student": TINY_STUDENT, "epochs": 1, "batch_size": 1}
    overrides = [
        "device=cpu",
        *(f"stages.distill.{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in distill.items()),
    ]
    runner = Runner(
        load_plan(Path(__file__).parents[1] / "plans" / "openscene-released-scannet.yaml", overrides=overrides)
    )
    report = runner.run()
    assert not report.failed, [o.error for o in report.failed]
    for scene_id, room in rooms.items():
        scene = runner.store.read(f"scenes/{scene_id}/input")
        assert np.array_equal(scene.load("points"), room.points)  # the .pth rows the features index
        predict = runner.store.read(f"scenes/{scene_id}/predict")
        scored = room.labels >= 0
        assert np.array_equal(predict.load("labels_2d")[scored], room.labels[scored])
    assert runner.store.read("global/evaluate").info["metrics"]["2d"]["miou"] == 1.0
