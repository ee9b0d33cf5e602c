import numpy as np
import pytest
import torch
from conftest import toy_plan_dict
from pydantic import ValidationError
from test_datasets import inside_solids

from ovlift.datasets.toy_street import (
    BEAM_ELEVATIONS_DEG,
    CAMERAS,
    MAX_SWEEPS,
    SWEEP_PERIOD_S,
    ToyStreetConfig,
    ToyStreetDataset,
    camera_to_ego,
    lidar_to_ego,
    make_toy_street,
)
from ovlift.kernels.projection import VisibilityRule, rigid_inverse, visible_correspondences
from ovlift.kernels.raycast import BOX, ROOM_FACES, cast_rays
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.vocabularies import NUSCENES16

SMALL = {"azimuth_steps": 64, "image_height": 45, "image_width": 80}
"""Sizes that keep a scene well under a second."""
ROAD, TERRAIN = NUSCENES16.index("drivable surface"), NUSCENES16.index("terrain")


def exact(**kwargs) -> ToyStreetDataset:
    return ToyStreetDataset(ToyStreetConfig(**{**SMALL, "range_noise_m": 0.0, **kwargs}))


def to_map(scene, points: np.ndarray) -> np.ndarray:
    pose = scene.key_pose
    return points.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]


def surface_distance(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, axis: int) -> np.ndarray:
    """How far outside (> 0) or inside (< 0) a box or its inscribed cylinder each point is,
    as the largest of the slab (and radial) violations: 0 exactly on the surface."""
    d = np.maximum(lo - points, points - hi)
    if axis == BOX:
        return d.max(axis=1)
    u, v = [a for a in range(3) if a != axis]
    centre, radius = (lo + hi) / 2, (hi[u] - lo[u]) / 2
    radial = np.hypot(points[:, u] - centre[u], points[:, v] - centre[v]) - radius
    return np.maximum(radial, d[:, axis])


def distance_to_instance(scene, points: np.ndarray, instances: np.ndarray, time: float) -> np.ndarray:
    """|surface distance| of each map-frame point to the nearest part of its instance at ``time``
    (the ground for ground points)."""
    lo, hi, axis = scene.solids(time)
    out = np.full(len(points), np.inf)
    ground = ~np.isin(instances, scene.layout.part_instance)
    out[ground] = np.abs(points[ground, 2])
    for k, instance in enumerate(scene.layout.part_instance):
        mine = np.flatnonzero(instances == instance)
        if len(mine):
            out[mine] = np.minimum(out[mine], np.abs(surface_distance(points[mine], lo[k], hi[k], axis[k])))
    return out


def test_toy_streets_are_deterministic_and_differ_by_index_and_seed():
    a = ToyStreetDataset(ToyStreetConfig(**SMALL)).load("toy_street_0001")
    b = ToyStreetDataset(ToyStreetConfig(**SMALL)).load("toy_street_0001")
    c = ToyStreetDataset(ToyStreetConfig(**SMALL)).load("toy_street_0002")
    for name in ("points", "labels", "instances", "sweep", "timestamp"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("color", "labels", "instances", "cam_to_world", "intrinsics"):
        np.testing.assert_array_equal(getattr(a.read_frame(2), name), getattr(b.read_frame(2), name))
    assert a.points.shape != c.points.shape or not np.array_equal(a.points, c.points)
    assert not np.array_equal(a.read_frame(0).color, c.read_frame(0).color)
    ds = ToyStreetDataset(ToyStreetConfig())
    assert ds.fingerprint("toy_street_0001") != ToyStreetDataset(ToyStreetConfig(seed=1)).fingerprint("toy_street_0001")
    assert ds.scene_ids()[:2] == ["toy_street_0000", "toy_street_0001"]
    # the street does not depend on what the sensors make of it
    fewer = ToyStreetDataset(ToyStreetConfig(num_sweeps=0, azimuth_steps=16, range_noise_m=0.1)).build(
        "toy_street_0001"
    )
    np.testing.assert_array_equal(fewer.layout.part_min, ds.build("toy_street_0001").layout.part_min)
    with pytest.raises(ValidationError):
        ToyStreetConfig(num_sweeps=11)


def test_a_street_has_every_kind_of_thing_in_view():
    """Over a few streets, the LiDAR sees every NUSCENES16 class; the sky gives no points."""
    ds = exact(num_scenes=4, num_sweeps=2, azimuth_steps=256)
    seen = set()
    for scene_id in ds.scene_ids():
        src = ds.load(scene_id)
        assert src.class_names == NUSCENES16.classes and (src.labels >= 0).all()
        seen |= set(np.unique(src.labels).tolist())
        frame = src.read_frame(0)
        assert frame.depth is None and frame.timestamp == 0.0 and frame.name == "CAM_FRONT"
        assert (frame.labels == -1).any() and (frame.instances[frame.labels == -1] == 0).all()  # sky
    assert seen == set(range(16)), sorted(set(range(16)) - seen)


def test_sensors_never_start_inside_a_solid():
    """``cast_rays`` needs ray origins outside every part: over many streets, the LiDAR at
    every sweep time and the cameras at the key frame are clear of everything (movers
    are placed outside the ego's corridor), with a margin."""
    config = ToyStreetConfig()
    for index in range(40):
        scene = make_toy_street(config, index)
        for k in range(MAX_SWEEPS + 1):
            lo, hi, axis = scene.solids(-k * SWEEP_PERIOD_S)
            ego = scene.layout.ego.pose(-k * SWEEP_PERIOD_S)
            mounts = [lidar_to_ego()] + ([camera_to_ego(p, yaw) for _, p, yaw, _ in CAMERAS] if k == 0 else [])
            origins = np.array([(ego @ m)[:3, 3] for m in mounts])
            near = origins[:, None, :] + np.array([[0, 0, 0], [0.3, 0, 0], [-0.3, 0, 0], [0, 0.3, 0], [0, -0.3, 0]])
            assert not inside_solids(near.reshape(-1, 3), lo, hi, axis).any(), (index, k)
            assert (origins > scene.layout.bounds_min).all() and (origins < scene.layout.bounds_max).all()


def test_key_frame_points_are_the_first_hits_of_their_beams():
    """Re-cast every beam of the key-frame sweep against every part (no culling), in
    float64: each point lies at its beam's first hit and has the class of what it hit;
    the beams that gave no point saw sky or nothing within range."""
    ds = exact(num_sweeps=0)
    scene = ds.build("toy_street_0000")
    points = ds.load("toy_street_0000")
    lidar = scene.sweep(0)
    np.testing.assert_array_equal(points.points, lidar.points)
    # in the key frame's own sensor frame, every point is on one of the 32 beams
    elevation = np.degrees(np.arcsin(lidar.points[:, 2] / np.linalg.norm(lidar.points, axis=1)))
    assert np.abs(elevation[:, None] - BEAM_ELEVATIONS_DEG[None]).min(axis=1).max() < 1e-3

    lo, hi, axis = (torch.from_numpy(a) for a in scene.solids(0.0))
    box = (torch.from_numpy(scene.layout.bounds_min), torch.from_numpy(scene.layout.bounds_max))
    origin = scene.key_pose[:3, 3]
    mapped = to_map(scene, lidar.points)
    o = torch.from_numpy(np.broadcast_to(origin, mapped.shape).copy())
    t, hit, _ = (x.numpy() for x in cast_rays(o, torch.from_numpy(mapped - origin), lo, hi, *box, axis))
    distance = np.linalg.norm(mapped - origin, axis=1)
    assert (np.abs(t - 1) * distance).max() < 1e-3  # metres
    num_parts = len(lo)
    part = hit < num_parts
    np.testing.assert_array_equal(lidar.instances[part], scene.layout.part_instance[hit[part]])
    floor = hit == num_parts + 4
    assert (part | floor).all()
    x, y = mapped[floor, 0], mapped[floor, 1]
    on_road = np.zeros(len(x), bool)
    for x0, y0, x1, y1 in scene.layout.floor_regions:
        on_road |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    np.testing.assert_array_equal(lidar.labels[floor], np.where(on_road, ROAD, TERRAIN))
    np.testing.assert_array_equal(lidar.labels, scene.instance_label[lidar.instances])

    beams = scene.beam_directions(0) @ scene.key_pose[:3, :3].T
    o = torch.from_numpy(np.broadcast_to(origin, beams.shape).copy())
    t, hit, _ = (x.numpy() for x in cast_rays(o, torch.from_numpy(beams), lo, hi, *box, axis))
    returns = ((hit < num_parts) | (hit == num_parts + 4)) & (t <= ds.config.lidar_range_m)
    assert returns.sum() == len(lidar.points)
    assert np.isin(hit[~returns] - num_parts, [0, 1, 2, 3, 5]).mean() > 0.5  # most misses are sky
    assert ROOM_FACES == 6


def test_range_noise_is_seeded_and_as_large_as_asked():
    noisy = ToyStreetDataset(ToyStreetConfig(**SMALL, num_sweeps=1, range_noise_m=0.05)).build("toy_street_0000")
    clean = exact(num_sweeps=1).build("toy_street_0000")
    a, b = noisy.sweep(1), clean.sweep(1)
    np.testing.assert_array_equal(a.instances, b.instances)
    error = np.linalg.norm(a.points, axis=1) - np.linalg.norm(b.points, axis=1)  # not along the ray: approximately
    assert 0.035 < error.std() < 0.065 and abs(error.mean()) < 0.01
    np.testing.assert_array_equal(a.points, noisy.sweep(1).points)


def test_sweeps_are_registered_static_surfaces_coincide_and_movers_smear():
    ds = exact(num_sweeps=10, azimuth_steps=128)
    scene = ds.build("toy_street_0003")
    lidar = scene.lidar()
    assert set(np.unique(lidar.sweep)) == set(range(11))
    np.testing.assert_allclose(lidar.timestamp, -SWEEP_PERIOD_S * lidar.sweep, atol=1e-7)
    # the ego turns (yaw rate) and moves, so registration is a real rigid motion
    assert abs(scene.layout.ego.yaw_rate) > 1e-3 and scene.layout.ego.speed >= 5
    # ground points of every sweep lie on one plane: z = -LiDAR height in the key frame
    road = lidar.labels == ROAD
    assert np.abs(lidar.points[road, 2] + 1.84).max() < 1e-4
    mapped = to_map(scene, lidar.points)
    speed = np.linalg.norm(scene.layout.instance_velocity[lidar.instances], axis=1)
    static, moving = speed == 0, speed > 1
    assert moving.sum() > 100
    # every static point of every sweep lies on a surface of its own instance as it is at the key frame
    assert distance_to_instance(scene, mapped[static], lidar.instances[static], 0.0).max() < 1e-4
    # a moving instance's points lie on it where it was at their sweep's time, not at the key frame
    for k in (2, 5, 10):
        mine = moving & (lidar.sweep == k)
        then = distance_to_instance(scene, mapped[mine], lidar.instances[mine], -k * SWEEP_PERIOD_S)
        now = distance_to_instance(scene, mapped[mine], lidar.instances[mine], 0.0)
        assert then.max() < 1e-4
        assert (now > 0.02).mean() > 0.4, k  # points on faces along the motion stay on their plane


def test_camera_pixels_agree_with_the_points_that_project_onto_them():
    """Key-frame points projected into the six cameras: with a z-buffer test against the
    rendered depth nearly every pixel has its point's label; without one (points hidden
    from a camera pair with the occluder's pixel) fewer do."""
    ds = exact(num_sweeps=0, azimuth_steps=256, image_height=90, image_width=160)
    scene = ds.build("toy_street_0001")
    lidar = scene.sweep(0)
    renders = [scene.render_camera(i) for i in range(len(CAMERAS))]
    frames = [scene.render(i) for i in range(len(CAMERAS))]
    for frame, (_, labels, _, _) in zip(frames, renders):
        np.testing.assert_array_equal(frame.labels, labels)
        np.testing.assert_array_equal(frame.labels, scene.instance_label[frame.instances])
        assert frame.color.dtype == np.uint8 and frame.labels.dtype == np.int16 and frame.instances.dtype == np.int32
    poses = torch.from_numpy(np.stack([f.cam_to_world for f in frames]))
    intrinsics = torch.from_numpy(np.stack([f.intrinsics for f in frames]))
    depth = torch.from_numpy(np.stack([r[3] for r in renders]))
    label_images = np.stack([f.labels for f in frames])
    points = torch.from_numpy(lidar.points)

    def agreement(rule: VisibilityRule, depth: torch.Tensor | None) -> tuple[float, int]:
        pairs = visible_correspondences(points, rigid_inverse(poses), intrinsics, (90, 160), rule, depth)
        pixel = label_images[pairs.frame_index.numpy(), pairs.pixel[:, 0].numpy(), pairs.pixel[:, 1].numpy()]
        return float((pixel == lidar.labels[pairs.point_index.numpy()]).mean()), len(pairs)

    tested, pairs_tested = agreement(VisibilityRule(depth_tolerance=0.05, cut_bound=0), depth)
    blind, pairs_blind = agreement(VisibilityRule(cut_bound=0), None)
    assert pairs_tested > 0.7 * pairs_blind and pairs_blind > 0.3 * len(points)
    assert tested > 0.97 and blind < tested, (tested, blind)


def test_toy_street_ingests_through_the_input_stage(tmp_path):
    data = toy_plan_dict(tmp_path / "s.zarr", name="toy-street", num_scenes=1, num_sweeps=3, **SMALL)
    data["dataset"].pop("num_frames")  # the toy default; a street has six cameras
    runner = Runner(plan_from_dict(data))
    assert runner.run(fail_fast=True).counts()["ran"] == 1
    group = runner.store.read("scenes/toy_street_0000/input")
    src = ToyStreetDataset(ToyStreetConfig(**SMALL, num_sweeps=3)).load("toy_street_0000")
    np.testing.assert_array_equal(group.load("points"), src.points)
    np.testing.assert_array_equal(group.load("labels"), src.labels)
    np.testing.assert_array_equal(group.load("sweep"), src.sweep)
    assert group.load("sweep").dtype == np.int16 and set(np.unique(group.load("sweep"))) == {0, 1, 2, 3}
    np.testing.assert_allclose(group.load("timestamp"), -SWEEP_PERIOD_S * group.load("sweep"), atol=1e-7)
    assert group.dims["T"] == 6 and group.dims["H"] == 45 and group.dims["W"] == 80
    assert "frames/depth" not in group and "frames/labels" in group
    np.testing.assert_array_equal(group.array("frames/timestamp")[:], np.zeros(6))
    assert group.info["class_names"] == list(NUSCENES16.classes)
    assert group.info["frame_names"] == [name for name, *_ in CAMERAS]
