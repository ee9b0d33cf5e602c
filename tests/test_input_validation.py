"""Every kind of bad input is rejected with a message naming scene, frame and array,
and nothing is written; invalid poses are skipped with a warning."""

import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
from conftest import shared_data, toy_plan_dict

from ovlift.cache_schema import SchemaError, Store
from ovlift.cache_schema.groups.frames import FrameImages
from ovlift.datasets.toy import ToyDataset
from ovlift.errors import StageInputError
from ovlift.pipeline.plan import Plan, plan_from_dict
from ovlift.pipeline.runner import Runner


class MutatedToy(ToyDataset):
    """Toy scenes with one defect applied by ``mutate(source) -> source``."""

    def __init__(self, config, mutate):
        super().__init__(config)
        self.mutate = mutate

    def load(self, scene_id):
        return self.mutate(super().load(scene_id))


def run_mutated(tmp_path, mutate, caplog=None):
    base = plan_from_dict(toy_plan_dict(tmp_path / "s.zarr", num_scenes=1))
    plan = Plan(
        store=base.store,
        dataset=MutatedToy(base.dataset.config, mutate),
        vocabulary=base.vocabulary,
        device="cpu",
        stages=base.stages,
    )
    runner = Runner(plan)
    runner.run(fail_fast=True)
    return runner.store


def assert_nothing_written(tmp_path):
    store = Store(tmp_path / "s.zarr")
    assert store.read("scenes/toy_0000/input") is None
    assert store.stage_groups("toy_0000") == []
    assert store.leftovers() == []


def with_frame(source, index, **changes):
    read = source.read_frame

    def read_frame(i):
        frame = read(i)
        return replace(frame, **{k: v(frame) for k, v in changes.items()}) if i == index else frame

    return replace(source, read_frame=read_frame)


def with_depth_camera(source, depth_to_color):
    """Every frame with a depth camera of its own (its intrinsics = the colour's)."""
    read = source.read_frame

    def read_frame(i):
        frame = read(i)
        return replace(frame, depth_intrinsics=frame.intrinsics, depth_to_color=depth_to_color(frame))

    return replace(source, read_frame=read_frame)


def nan_points(s):
    points = s.points.copy()
    points[7, 1] = np.nan
    points[9, 0] = np.inf
    return replace(s, points=points)


CASES = {
    "nan points": (nan_points, r"scene 'toy_0000': array 'points' has 2 non-finite rows \(NaN/inf\), first at row 7"),
    "empty cloud": (
        lambda s: replace(
            s, points=np.zeros((0, 3), np.float32), colors=None, normals=None, labels=None, instances=None, faces=None
        ),
        r"scene 'toy_0000': array 'points' is empty",
    ),
    "labels outside the label set": (
        lambda s: replace(s, labels=np.where(np.arange(len(s.labels)) == 3, 20, s.labels)),
        r"scene 'toy_0000': array 'labels' has 1 values outside the label set \(found \[20\]; expected 0..19 or -1",
    ),
    "faces past the points": (
        lambda s: replace(s, faces=np.vstack([s.faces, [[0, 1, len(s.points)]]])),
        r"scene 'toy_0000': array 'faces' indexes vertex \d+, expected indices in \[0, \d+\)",
    ),
    "color/depth sizes disagree": (
        lambda s: with_frame(s, 2, depth=lambda f: f.depth[:-4]),
        r"scene 'toy_0000', frame 'frame-000002': array 'frames/depth' is 56x80 but the colour image is 60x80",
    ),
    "depth camera in some frames only": (
        lambda s: with_frame(s, 2, depth_intrinsics=lambda f: f.intrinsics),
        r"scene 'toy_0000', frame 'frame-000002': array 'frames/depth_intrinsics' present in some frames and missing",
    ),
    "depth camera not rigid": (
        lambda s: with_depth_camera(s, lambda f: np.diag([1.0, 2.0, 1.0, 1.0])),
        r"scene 'toy_0000', frame 'frame-000000': array 'frames/depth_to_color' expected a finite rigid 4x4 transform",
    ),
    "depth camera's depth changes size": (
        lambda s: with_frame(with_depth_camera(s, lambda f: np.eye(4)), 1, depth=lambda f: f.depth[:-4]),
        r"frame 'frame-000001': array 'frames/depth' expected 60x80 \(the size of the first frame's depth\), found",
    ),
    "depth in millimetres": (
        lambda s: with_frame(s, 1, depth=lambda f: f.depth * 1000),
        r"scene 'toy_0000', frame 'frame-000001': array 'frames/depth' has median \d+\.\d m.*millimetres",
    ),
    "no valid pose": (
        lambda s: replace(s, read_frame=lambda i, r=s.read_frame: replace(r(i), cam_to_world=np.full((4, 4), -np.inf))),
        r"scene 'toy_0000': array 'frames/cam_to_world': none of the 4 poses is valid",
    ),
    "sweep without its times": (
        lambda s: replace(s, sweep=np.zeros(len(s.points), np.int16)),
        r"scene 'toy_0000': arrays 'sweep' and 'timestamp' must be given together",
    ),
    "negative sweep index": (
        lambda s: replace(
            s, sweep=np.where(np.arange(len(s.points)) == 5, -1, 0), timestamp=np.zeros(len(s.points), np.float32)
        ),
        r"scene 'toy_0000': array 'sweep' expected integer sweep indices >= 0 .*found int64 in \[-1, 0\]",
    ),
    "no key-frame points": (
        lambda s: replace(s, sweep=np.ones(len(s.points), np.int16), timestamp=np.full(len(s.points), -0.05)),
        r"scene 'toy_0000': array 'sweep' has no key-frame points \(sweep 0\)",
    ),
    "frame timestamp in some frames only": (
        lambda s: with_frame(s, 2, timestamp=lambda f: 0.01),
        r"scene 'toy_0000', frame 'frame-000002': array 'frames/timestamp' present in some frames and missing",
    ),
    "frame label outside the label set": (
        lambda s: with_frame(s, 3, labels=lambda f: np.full_like(f.labels, 99)),
        r"scene 'toy_0000', frame 'frame-000003': array 'frames/labels' has 4800 values outside the label set",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_with_a_clear_message_and_nothing_written(tmp_path, case):
    mutate, message = CASES[case]
    with pytest.raises(StageInputError, match=message):
        run_mutated(tmp_path, mutate)
    assert_nothing_written(tmp_path)


SHAPE_CASES = {
    "points not 3-d": (lambda s: replace(s, points=s.points[:, :2]), r"array 'points' expected shape \(N, 3\)"),
    "colours of another count": (lambda s: replace(s, colors=s.colors[:-1]), r"array 'colors' has N=\d+ on axis 0"),
    "faces not triangles": (lambda s: replace(s, faces=s.faces[:, :2]), r"array 'faces' expected shape \(F, 3\)"),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_wrong_shapes_are_caught_by_the_spec_naming_scene_and_array(tmp_path, case):
    mutate, message = SHAPE_CASES[case]
    with pytest.raises(SchemaError, match=r"scene 'toy_0000', stage 'input': " + message):
        run_mutated(tmp_path, mutate)
    assert_nothing_written(tmp_path)


def test_invalid_poses_are_marked_and_warned_not_fatal(tmp_path, caplog):
    def mutate(s):
        s = with_frame(s, 1, cam_to_world=lambda f: np.full((4, 4), -np.inf))  # ScanNet's marker
        return with_frame(s, 3, cam_to_world=lambda f: np.zeros((4, 4)))  # not invertible

    with caplog.at_level(logging.WARNING, logger="ovlift"):
        store = run_mutated(tmp_path, mutate)
    group = store.read("scenes/toy_0000/input")
    assert group.load("frames/pose_valid").tolist() == [True, False, True, False]
    poses = group.load("frames/cam_to_world")
    assert np.isnan(poses[[1, 3]]).all() and np.isfinite(poses[[0, 2]]).all()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("frame 'frame-000001'" in w and "invalid pose" in w for w in warned)
    assert any("frame 'frame-000003'" in w for w in warned)


def test_a_truncated_image_names_scene_frame_and_file(tmp_path):
    lounge = shared_data("3dmatch-lounge")
    copy = tmp_path / "lounge"
    shutil.copytree(lounge, copy)
    image = sorted(copy.rglob("*.color.png"))[2]
    image.write_bytes(image.read_bytes()[:5000])
    plan = plan_from_dict(
        {
            "store": str(tmp_path / "s.zarr"),
            "dataset": {"name": "rgbd-folder", "paths": [str(copy)]},
            "stages": {"input": {}},
        }
    )
    frame = image.name.removesuffix(".color.png")
    with pytest.raises(StageInputError, match=rf"scene 'lounge', frame 'seq-01/{frame}': cannot read image '{image}'"):
        Runner(plan).run(fail_fast=True)
    assert Store(tmp_path / "s.zarr").stage_groups("lounge") == []


def test_a_slightly_non_rigid_pose_is_stored_as_the_rigid_transform_the_cloud_was_built_with(tmp_path):
    """7-Scenes poses are ~2.4e-4 off orthonormal: the cloud built with one matrix and
    projected with the (rigid) inverse of another would miss by ~0.5 mm at 2 m."""
    copy = tmp_path / "lounge"
    shutil.copytree(shared_data("3dmatch-lounge"), copy)
    pose_file = sorted(copy.rglob("*.pose.txt"))[0]
    pose = np.loadtxt(pose_file)
    skew = np.random.default_rng(0).normal(scale=2.4e-4, size=(3, 3))
    pose[:3, :3] = pose[:3, :3] @ (np.eye(3) + skew)
    np.savetxt(pose_file, pose)
    dataset = {"name": "rgbd-folder", "paths": [str(copy)], "cloud_frame_stride": 100, "voxel_size_m": 1e-4}
    plan = plan_from_dict({"store": str(tmp_path / "s.zarr"), "dataset": dataset, "stages": {"input": {}}})
    Runner(plan).run(fail_fast=True)
    group = Store(tmp_path / "s.zarr").read("scenes/lounge/input")
    stored = group.load("frames/cam_to_world")[0]
    rot = stored[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rot, scipy.linalg.polar(pose[:3, :3])[0], atol=1e-12)  # the nearest rotation
    np.testing.assert_array_equal(stored[3], [0, 0, 0, 1])
    # the cloud (frame 0's depth alone) projected back with the stored pose lands on its pixels
    k, depth = group.load("frames/intrinsics")[0].astype(np.float64), FrameImages(group).depth([0])[0]
    cam = (group.load("points").astype(np.float64) - stored[:3, 3]) @ rot
    col, row = k[0, 0] * cam[:, 0] / cam[:, 2] + k[0, 2], k[1, 1] * cam[:, 1] / cam[:, 2] + k[1, 2]
    assert np.abs(col - col.round()).max() < 1e-3 and np.abs(row - row.round()).max() < 1e-3
    np.testing.assert_allclose(cam[:, 2], depth[row.round().astype(int), col.round().astype(int)], atol=1e-5)
