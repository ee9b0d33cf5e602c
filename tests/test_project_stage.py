import numpy as np
import pytest
import torch
from conftest import toy_plan_dict
from test_projection import reference_visibility

from ovlift.cache_schema import ArraySpec, GroupSpec
from ovlift.config import FrozenConfig
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
