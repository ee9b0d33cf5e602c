from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import toy_plan_dict
from layout_scene import layout_scene
from test_projection import reference_visibility

from ovlift.cache_schema import ArraySpec, GroupSpec
from ovlift.config import FrozenConfig
from ovlift.datasets.base import SceneSource
from ovlift.datasets.toy import ToyDataset
from ovlift.kernels.projection import VisibilityRule, resize_depth, rigid_inverse, scale_intrinsics
from ovlift.pipeline.plan import Plan, PlanError, StagePlan, plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.stages.base import Stage


class SeenConfig(FrozenConfig):
    pass


class SeenStage(Stage[SeenConfig]):
    """A stand-in for the stages that will read ``project``."""

    implementation = "test"
    version = "1"
    reads = ("project",)
    spec = GroupSpec("seen", "test", (ArraySpec("seen", "bool", ("N",), (None,), "seen by a frame"),))

    def run(self, ctx, out):
        out.write("seen", ctx.inputs["project"].load("view_count") > 0)


def plan_with(store, **project):
    data = toy_plan_dict(store, num_scenes=2, num_frames=6, image_height=48, image_width=64)
    data["stages"]["project"] = {"cut_bound": 2, **project}
    base = plan_from_dict(data)
    stages = dict(base.stages)
    stages["seen"] = StagePlan("seen", SeenStage(SeenConfig()))
    return Plan(base.store, base.dataset, base.vocabulary, "cpu", stages)


def by_stage(report):
    out = {}
    for o in report.outcomes:
        out.setdefault(o.stage, set()).add(o.status)
    return out


def test_project_stage_equals_the_reference_loop_on_stored_arrays(tmp_path):
    """End to end: strided frames, features at half size (rescaled intrinsics, resized depth)."""
    plan = plan_with(tmp_path / "s.zarr", frame_stride=2, feature_height=24, feature_width=32, frames_per_batch=2)
    runner = Runner(plan)
    runner.run(fail_fast=True)
    scene = runner.store.read("scenes/toy_0001/input")
    group = runner.store.read("scenes/toy_0001/project")
    frames = [0, 2, 4]
    k = scale_intrinsics(torch.from_numpy(scene.load("frames/intrinsics")).double(), (48, 64), (24, 32))[frames]
    w2c = rigid_inverse(torch.from_numpy(scene.load("frames/cam_to_world")))[frames]
    depth = resize_depth(torch.from_numpy(scene.load("frames/depth")), (24, 32))[frames]
    rule = VisibilityRule(0.25, "relative", 2)
    expected = reference_visibility(
        scene.load("points").astype(np.float64), w2c.numpy(), k.numpy(), (24, 32), rule, depth.numpy()
    )
    expected = [(p, frames[f], r, c) for p, f, r, c in expected]
    got = list(
        zip(group.load("point_index").tolist(), group.load("frame_index").tolist(), *group.load("pixel").T.tolist())
    )
    assert got == sorted(expected)  # sorted by point, then frame
    assert group.info == {"feature_size": [24, 32], "frames": frames, "teachers": {}}
    np.testing.assert_array_equal(
        group.load("view_count"), np.bincount(group.load("point_index"), minlength=scene.dims["N"])
    )


def test_rerun_is_a_hit_and_a_tolerance_change_reruns_project_and_downstream(tmp_path):
    store = tmp_path / "s.zarr"
    first = Runner(plan_with(store)).run()
    assert by_stage(first) == {"input": {"ran"}, "project": {"ran"}, "seen": {"ran"}}
    assert by_stage(Runner(plan_with(store)).run()) == {"input": {"cached"}, "project": {"cached"}, "seen": {"cached"}}
    # batch size and device do not change results: still a hit
    assert by_stage(Runner(plan_with(store, frames_per_batch=1)).run())["project"] == {"cached"}
    changed = Runner(plan_with(store, depth_tolerance=0.05)).run()
    assert by_stage(changed) == {"input": {"cached"}, "project": {"ran"}, "seen": {"ran"}}
    switched = Runner(plan_with(store, depth_tolerance=0.05, tolerance_kind="absolute")).run()
    assert by_stage(switched) == {"input": {"cached"}, "project": {"ran"}, "seen": {"ran"}}


def test_feature_size_needs_both_sides(tmp_path):
    with pytest.raises(PlanError, match="set both feature_height and feature_width"):
        plan_with(tmp_path / "s.zarr", feature_height=24)


class TwoCameraRoom(ToyDataset):
    """A toy room seen by a ScanNet-like sensor: colour and depth of different sizes and
    intrinsics, the depth camera 6 cm beside the colour camera."""

    def load(self, scene_id):
        room = layout_scene(num_frames=4, color_hw=(97, 130), depth_hw=(48, 64), depth_offset_m=(0.06, 0.0, 0.0))

        def read_frame(i):
            view = room.views[i]
            return replace(
                view.color,
                depth=view.depth.depth,
                depth_intrinsics=room.depth_intrinsics,
                depth_to_color=room.depth_to_color,
            )

        return SceneSource(
            scene_id=scene_id,
            points=room.scene.points,
            labels=room.labels,
            class_names=room.class_names,
            frame_names=[v.color.name for v in room.views],
            read_frame=read_frame,
        )


def test_a_separate_depth_camera_is_stored_and_tested_in_its_own_image(tmp_path):
    """Pixels come from the colour camera, occlusion from the depth camera: nearly every
    correspondence lands on a colour pixel of the vertex's own class, and the stored pairs
    equal the reference loop run with the depth camera."""
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1)
    data["stages"]["project"] = {"cut_bound": 2, "tolerance_kind": "absolute", "depth_tolerance": 0.05}
    base = plan_from_dict(data)
    plan = Plan(base.store, TwoCameraRoom(base.dataset.config), base.vocabulary, "cpu", base.stages)
    runner = Runner(plan)
    runner.run(fail_fast=True)
    scene = runner.store.read("scenes/toy_0000/input")
    assert scene.load("frames/color").shape == (4, 97, 130, 3)
    assert scene.load("frames/depth").shape == (4, 48, 64)
    np.testing.assert_allclose(scene.load("frames/depth_to_color")[0][:3, 3], [0.06, 0, 0])
    group = runner.store.read("scenes/toy_0000/project")
    assert group.info["feature_size"] == [97, 130]
    w2c = rigid_inverse(torch.from_numpy(scene.load("frames/cam_to_world")))
    w2d = rigid_inverse(torch.from_numpy(scene.load("frames/cam_to_world") @ scene.load("frames/depth_to_color")))
    rule = VisibilityRule(0.05, "absolute", 2)
    points = scene.load("points").astype(np.float64)
    expected = reference_visibility(
        points,
        w2c.numpy(),
        scene.load("frames/intrinsics").astype(np.float64),
        (97, 130),
        rule,
        scene.load("frames/depth"),
        None,
        (w2d.numpy(), scene.load("frames/depth_intrinsics").astype(np.float64)),
    )
    point, frame, pixel = group.load("point_index"), group.load("frame_index"), group.load("pixel")
    assert sorted(zip(point.tolist(), frame.tolist(), pixel[:, 0].tolist(), pixel[:, 1].tolist())) == expected
    room = layout_scene(num_frames=4, color_hw=(97, 130), depth_hw=(48, 64), depth_offset_m=(0.06, 0.0, 0.0))
    rendered = np.stack([v.color.labels for v in room.views])[frame, pixel[:, 0], pixel[:, 1]]
    assert len(point) > 5000
    assert (rendered == scene.load("labels")[point]).mean() > 0.97
