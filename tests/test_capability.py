"""SAS's capability stage with the ``render`` generator: exact masks, so capability is checkable."""

import numpy as np
import pytest
import torch

from ovlift.datasets.toy import object_view
from ovlift.errors import StageInputError
from ovlift.models.generators.render import RenderConfig, RenderGenerator
from ovlift.pipeline.plan import PlanError, plan_from_dict
from ovlift.pipeline.runner import Runner, Status
from ovlift.vocabularies import SCANNET20
from tests.conftest import toy_plan_dict

CLASSES = ("wall", "floor", "chair", "sofa", "table", "shower curtain")


def capability_plan(tmp_path, extract2d: dict, **capability) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    vocabulary = tmp_path / "vocab.txt"
    vocabulary.write_text("\n".join(CLASSES) + "\n")
    data = toy_plan_dict(tmp_path / "store.zarr", num_scenes=1)
    size = {"feature_height": 40, "feature_width": 54}
    data["stages"]["extract2d"] = {name: {**size, **cfg} for name, cfg in extract2d.items()}
    data["stages"]["capability"] = {
        "implementation": "render",
        "vocabulary": str(vocabulary),
        "images_per_class": 10,
        "image_height": 40,
        "image_width": 54,
        **capability,
    }
    return data


def run_capability(data: dict, tmp_path):
    runner = Runner(plan_from_dict(data, tmp_path))
    report = runner.run(stages=["capability"])
    assert not report.failed, report.failed[0].error
    return runner.store.read("global/capability")


def test_object_views_are_deterministic_and_show_their_class():
    for name in ("chair", "picture", "wall", "floor", "bathtub"):
        first, again = object_view(name, (3, 1), 48, 64).render(0), object_view(name, (3, 1), 48, 64).render(0)
        assert np.array_equal(first.color, again.color)
        share = (first.labels == SCANNET20.index(name)).mean()
        assert 0.01 < share, f"{name} covers {share:.3f} of its own image"
    with pytest.raises(KeyError, match="shower curtain"):
        object_view("shower curtain", (0,), 48, 64)


def surface_points(scene, depth: np.ndarray) -> np.ndarray:
    """(H, W, 3) the world point each pixel shows, from its z-depth through the camera (slow and plain)."""
    k, pose = scene.intrinsics, scene.cam_to_world[0]
    rows, cols = np.indices(depth.shape)
    camera = np.stack([(cols - k[0, 2]) / k[0, 0] * depth, (rows - k[1, 2]) / k[1, 1] * depth, depth], -1)
    return camera @ pose[:3, :3].T + pose[:3, 3]


def test_render_masks_are_the_true_masks_and_untemplated_classes_get_none(monkeypatch):
    """Each mask pixel shows a point of the object (within its parts' boxes) and no other pixel shows a
    point strictly inside one; a floor mask is the pixels that show the floor (z = 0, off the walls)."""
    from ovlift.models.generators import render

    scenes = []
    monkeypatch.setattr(render, "object_view", lambda *a: scenes.append(object_view(*a)) or scenes[-1])
    generator = RenderGenerator(RenderConfig(images_per_class=3, image_height=40, image_width=54), "cpu", "test")
    eps = 1e-3  # metres; the ray caster works in float32
    for name in ("chair", "picture", "floor"):
        scenes.clear()
        drawn = generator.generate(name)
        assert drawn.images.shape == (3, 40, 54, 3) and drawn.images.dtype == torch.uint8 and len(scenes) == 3
        assert not torch.equal(drawn.images[0], drawn.images[1])  # image i is seeded by i
        for scene, mask, depth in zip(scenes, drawn.pseudo_masks.numpy(), drawn.depth.numpy()):
            points = surface_points(scene, depth.astype(np.float64))[..., None, :]
            if name == "floor":  # what is not floor is above it or on a wall (x or y at the room's bounds)
                x, y, z = np.moveaxis(points[:, :, 0], -1, 0)
                walls = (np.minimum(x, scene.room_max[0] - x) < eps) | (np.minimum(y, scene.room_max[1] - y) < eps)
                assert 0.01 < mask.mean() and (np.abs(z[mask]) < eps).all() and ((z > eps) | walls)[~mask].all()
                continue
            lo, hi = scene.part_min, scene.part_max
            on = ((points >= lo - eps) & (points <= hi + eps)).all(-1).any(-1)
            within = ((points > lo + eps) & (points < hi - eps)).all(-1).any(-1)
            assert 0.01 < mask.mean() and (on | ~mask).all() and (mask | ~within).all(), name
    assert len(generator.generate("shower curtain").images) == 0


def test_capability_is_one_minus_each_teachers_confusion(tmp_path):
    """Confusion is drawn per view from a stratified sequence, so over 10 images a rate
    of 0.6 confuses 6 exactly: the capability of a class is 1 - its confusion rate."""
    teachers = {
        "a": {"implementation": "synthetic", "confusion": {"chair": {"sofa": 0.6}, "table": {"chair": 0.3}}},
        "b": {"implementation": "synthetic", "confusion": {"sofa": {"table": 0.2}}, "seed": 1},
    }
    group = run_capability(capability_plan(tmp_path, teachers), tmp_path)
    capability = group.load("capability")
    assert group.info["teachers"] == ["a", "b"] and group.info["classes"] == list(CLASSES)
    expected = np.array([[1.0, 1.0, 0.4, 1.0, 0.7, 0.0], [1.0, 1.0, 1.0, 0.8, 1.0, 0.0]])
    np.testing.assert_allclose(capability, expected, atol=0.101)
    assert capability[0, 2] < capability[1, 2] and capability[1, 3] < capability[0, 3]
    assert group.load("image_count").tolist() == [10, 10, 10, 10, 10, 0]
    per_image = group.load("per_image_iou")
    assert per_image.shape == (2, 6, 10) and np.isnan(per_image[:, 5]).all()
    sheets = sorted(p.name for p in (tmp_path / group.info["contact_sheets"]).iterdir())
    assert sheets == ["chair.png", "floor.png", "sofa.png", "table.png", "wall.png"]


def test_pooled_iou_weighs_images_by_their_area(tmp_path):
    """SAS's code pools intersections and unions over a class's images; the paper averages
    per-image IoU. With whole images confused, pooled weighs large views more."""
    teachers = {"a": {"implementation": "synthetic", "confusion": {"chair": {"sofa": 0.5}}}}
    mean = run_capability(capability_plan(tmp_path / "mean", teachers), tmp_path / "mean")
    pooled = run_capability(capability_plan(tmp_path / "pooled", teachers, iou="pooled"), tmp_path / "pooled")
    per_image = mean.load("per_image_iou")[0, 2]
    np.testing.assert_allclose(mean.load("capability")[0, 2], np.nanmean(per_image), rtol=1e-6)
    chair = RenderGenerator(RenderConfig(images_per_class=10, image_height=40, image_width=54), "cpu", "test").generate(
        "chair"
    )
    area = chair.pseudo_masks.sum((1, 2)).numpy()
    np.testing.assert_allclose(pooled.load("capability")[0, 2], (area * per_image).sum() / area.sum(), rtol=1e-5)


def test_teachers_in_different_text_spaces_are_refused(tmp_path):
    teachers = {
        "a": {"implementation": "synthetic"},
        "b": {"implementation": "synthetic", "text": {"kind": "clip", "path": str(tmp_path)}},
    }
    runner = Runner(plan_from_dict(capability_plan(tmp_path, teachers), tmp_path))
    with pytest.raises(StageInputError, match="different text spaces"):
        runner.run(stages=["capability"], fail_fast=True)


def test_plan_names_missing_teachers_and_cached_teachers_without_outputs(tmp_path):
    teachers = {"a": {"implementation": "synthetic"}}
    with pytest.raises(PlanError, match=r"measures teachers \['b'\].*configures \['a'\]"):
        plan_from_dict(capability_plan(tmp_path, teachers, teachers=["b"]), tmp_path)
    cached = {"lseg": {"implementation": "cached", "path": str(tmp_path), "channels": 384}}
    with pytest.raises(PlanError, match="cached_outputs.lseg"):
        plan_from_dict(capability_plan(tmp_path, cached), tmp_path)


def test_cached_teacher_reads_its_outputs_on_the_exported_images(tmp_path):
    """A teacher computed elsewhere: the first run exports the images and names the files it
    needs; once they exist (here: the class's text embedding on its true mask), it runs."""
    outputs = tmp_path / "lseg-outputs"
    cached = {"lseg": {"implementation": "cached", "path": str(tmp_path), "channels": 384}}
    data = capability_plan(tmp_path, cached, cached_outputs={"lseg": str(outputs)}, images_per_class=2)
    runner = Runner(plan_from_dict(data, tmp_path))
    report = runner.run(stages=["capability"])
    error = report.failed[0].error
    assert "missing (10 files" in error and "cached_outputs" in error
    exported = sorted((tmp_path / "store.zarr.files").rglob("image-*.png"))
    assert len(exported) == 2 * 5  # every class with images
    from ovlift.models.text import TextEncoderConfig

    embed = runner.text(TextEncoderConfig(), list(CLASSES)).numpy()
    generator = RenderGenerator(RenderConfig(images_per_class=2, image_height=40, image_width=54), "cpu", "t")
    for k, name in enumerate(CLASSES[:5]):
        images = generator.generate(name)
        for i, mask in enumerate(images.pseudo_masks.numpy()):
            other = embed[(k + 1) % 5]
            features = np.where(mask[..., None], embed[k], other).astype(np.float32)
            path = outputs / f"capability-{name}" / f"image-{i:06d}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, features)
    group = run_capability(data, tmp_path)
    np.testing.assert_allclose(group.load("capability")[0, :5], 1.0, atol=0.05)


def test_reruns_follow_the_teachers_and_the_rows_follow_teachers(tmp_path):
    """A rerun is a cache hit; changing a measured teacher's config reruns the stage (its
    fingerprint covers the teachers' configs); ``teachers`` orders the rows; ``zero_classes``
    get capability 0 without images (SAS's 'other')."""
    extract2d = {
        "a": {"implementation": "synthetic", "confusion": {"chair": {"sofa": 0.6}}},
        "b": {"implementation": "synthetic"},
    }
    data = capability_plan(tmp_path, extract2d, teachers=["b", "a"], images_per_class=4, zero_classes=["table"])
    first = run_capability(data, tmp_path)
    assert first.info["teachers"] == ["b", "a"]
    capability = first.load("capability")
    assert capability[1, 2] < capability[0, 2] and (capability[:, 4] == 0).all()
    assert first.load("image_count")[4] == 0
    assert Runner(plan_from_dict(data, tmp_path)).run(stages=["capability"]).counts()[Status.CACHED] == 1
    data["stages"]["extract2d"]["a"]["confusion"] = {"chair": {"sofa": 0.3}}
    again = run_capability(data, tmp_path)
    assert again.fingerprint != first.fingerprint and again.load("capability")[1, 2] > capability[1, 2]
