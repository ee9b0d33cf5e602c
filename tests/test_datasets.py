import numpy as np
import pytest
import torch
from conftest import shared_data
from layout_scene import layout_scene
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ovlift.cache_schema.groups.frames import FrameImages
from ovlift.datasets.furniture import Part
from ovlift.datasets.rgbd_folder import RGBDFolderConfig, RGBDFolderDataset
from ovlift.datasets.toy import ToyConfig, ToyDataset
from ovlift.kernels.geometry import backproject_depth
from ovlift.kernels.raycast import BOX, ROOM_FACES, cast_rays
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.vocabularies import SCANNET20


def test_toy_scenes_are_deterministic_and_differ_by_seed():
    a = ToyDataset(ToyConfig(num_frames=2)).load("toy_0001")
    b = ToyDataset(ToyConfig(num_frames=2)).load("toy_0001")
    c = ToyDataset(ToyConfig(num_frames=2, seed=1)).load("toy_0001")
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.read_frame(1).color, b.read_frame(1).color)
    assert a.points.shape != c.points.shape or not np.array_equal(a.points, c.points)
    assert ToyDataset(ToyConfig()).fingerprint("toy_0001") != ToyDataset(ToyConfig(seed=1)).fingerprint("toy_0001")


def test_toy_scene_has_room_furniture_mesh_and_consistent_labels():
    ds = ToyDataset(ToyConfig(num_frames=3))
    scene = ds.build("toy_0000")
    src = ds.load("toy_0000")
    names = {SCANNET20.classes[i] for i in np.unique(src.labels) if i >= 0}
    assert {"wall", "floor"} <= names and len(names) >= 5  # room + several furniture classes
    assert (src.labels == -1).any()  # the ceiling is unlabelled in ScanNet-20
    assert src.faces.max() < len(src.points) and len(src.faces) > len(src.points)
    # every point lies inside the room, on the surface of a solid, up to the reconstruction noise
    noise = 6 * ds.config.surface_noise_m + 1e-5
    assert (src.points >= scene.room_min - noise).all() and (src.points <= scene.room_max + noise).all()
    # rendered label image agrees with the labels of the instance hit
    frame = src.read_frame(1)
    assert frame.color.shape == (240, 320, 3) and frame.depth.shape == (240, 320)
    np.testing.assert_array_equal(frame.labels, scene.instance_label[frame.instances])
    assert frame.depth.min() > 0.1 and frame.depth.max() < np.linalg.norm(scene.room_max)


def test_toy_depth_is_exact_ray_cast_geometry():
    """Back-projecting rendered depth lands exactly on the hit surface (no tolerance games)."""
    ds = ToyDataset(ToyConfig(num_frames=2, surface_noise_m=0, depth_noise=0))
    scene = ds.build("toy_0000")
    frame = scene.render(0)
    pts, index = backproject_depth(
        torch.from_numpy(frame.depth).double(), torch.from_numpy(frame.intrinsics), torch.from_numpy(frame.cam_to_world)
    )
    # the first hit from the camera towards each back-projected point is the point itself
    t = scene.first_hit_distance(frame.cam_to_world[:3, 3], pts.numpy())
    assert np.abs(t - 1).max() < 1e-4


def inside_solids(points, part_min, part_max, part_axis):
    """Whether each point is inside (or on) a solid part: the obvious membership test."""
    inside = np.zeros(len(points), bool)
    for lo, hi, axis in zip(part_min, part_max, part_axis):
        within = np.all((points >= lo) & (points <= hi), axis=1)
        if axis != BOX:
            u, v = [a for a in range(3) if a != axis]
            centre, radius = (lo + hi) / 2, (hi[u] - lo[u]) / 2
            within &= (points[:, u] - centre[u]) ** 2 + (points[:, v] - centre[v]) ** 2 <= radius**2
        inside |= within
    return inside


def test_cast_rays_stops_where_a_marching_ray_first_enters_a_box_or_cylinder():
    rng = np.random.default_rng(0)
    room_min, room_max = np.zeros(3), np.array([4.0, 3.0, 2.5])
    num_parts = 14
    part_axis = np.resize([BOX, 0, 1, 2], num_parts)  # boxes and cylinders along every axis
    part_min = rng.uniform(0.2, room_max - 0.8, (num_parts, 3))
    size = rng.uniform(0.1, 0.7, (num_parts, 3))
    for k, axis in enumerate(part_axis):
        if axis != BOX:  # a cylinder's box has a square cross-section
            size[k, [a for a in range(3) if a != axis]] = size[k, (axis + 1) % 3]
    part_max = part_min + size
    origins = rng.uniform(room_min + 0.01, room_max - 0.01, (2000, 3))
    origins = origins[~inside_solids(origins, part_min, part_max, part_axis)][:300]
    # most rays aim at a point of a part's box (some graze it or miss the cylinder in it)
    aim = rng.integers(num_parts, size=len(origins))
    targets = rng.uniform(part_min[aim] - 0.05, part_max[aim] + 0.05)
    targets[::4] = rng.uniform(room_min, room_max, targets[::4].shape)
    directions = (targets - origins) * rng.uniform(0.5, 2.0, (len(origins), 1))  # not unit length
    arrays = (origins, directions, part_min, part_max, room_min, room_max)
    t, hit, normal = (x.numpy() for x in cast_rays(*map(torch.from_numpy, arrays), torch.from_numpy(part_axis)))
    # 50 rays x parts per block (12 rays a block for the 4 boxes, 5 for the 10 cylinders): the same hits
    blocked = cast_rays(*map(torch.from_numpy, arrays), torch.from_numpy(part_axis), block=50)
    for whole, part in zip((t, hit, normal), blocked):
        np.testing.assert_array_equal(part.numpy(), whole)

    step = 5e-4  # metres along the ray
    speed = np.linalg.norm(directions, axis=1)
    for r in range(len(origins)):
        s = np.arange(0, 7.0, step) / speed[r]
        p = origins[r] + s[:, None] * directions[r]
        stop = inside_solids(p, part_min, part_max, part_axis) | np.any((p < room_min) | (p > room_max), axis=1)
        first = int(np.argmax(stop))
        assert stop[first] and abs(t[r] - s[first]) * speed[r] <= step, (r, t[r], s[first])
        q = p[first]
        if hit[r] < num_parts:  # the part hit holds the first point inside
            assert inside_solids(q[None], part_min[[hit[r]]], part_max[[hit[r]]], part_axis[[hit[r]]])[0], r
        else:
            face = hit[r] - num_parts
            assert (q[face // 2] > room_max[face // 2]) if face % 2 else (q[face // 2] < room_min[face // 2])
        # the normal points out of the solid hit, into free space
        at = origins[r] + t[r] * directions[r]
        assert abs(np.linalg.norm(normal[r]) - 1) < 1e-9
        probes = at + 1e-6 * np.outer([1, -1], normal[r])  # ahead of the surface, behind it
        free = ~inside_solids(probes, part_min, part_max, part_axis) & np.all(
            (probes > room_min) & (probes < room_max), axis=1
        )
        assert free[0] and not free[1], r


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    return np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)


def vertex_components(faces: np.ndarray, num_points: int) -> np.ndarray:
    edges = mesh_edges(faces)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_points, num_points))
    return connected_components(graph, directed=False)[1]


def test_toy_mesh_is_welded_manifold_and_the_room_is_one_shell():
    ds = ToyDataset(ToyConfig(num_scenes=3, num_frames=1, vertex_spacing_m=0.1, surface_noise_m=0))
    for scene_id in ds.scene_ids():
        scene = ds.build(scene_id)
        points, faces = scene.points.astype(np.float64), scene.faces.astype(np.int64)
        assert not cKDTree(points).query_pairs(1e-7), "two vertices at one position"
        assert (faces[:, [0, 1, 2]] != faces[:, [1, 2, 0]]).all(), "a degenerate triangle"
        assert len(np.unique(faces)) == len(points)
        _, uses = np.unique(mesh_edges(faces), axis=0, return_counts=True)
        assert uses.max() <= 2, f"{scene_id}: an edge of {uses.max()} triangles"
        room = faces[(scene.point_instance[faces] < ROOM_FACES).all(axis=1)]
        assert len(np.unique(vertex_components(room, len(points))[np.unique(room)])) == 1
        # faces, parts and objects are joined: fewer pieces than objects
        assert len(np.unique(vertex_components(faces, len(points)))) <= len(scene.instance_class) - ROOM_FACES


def test_a_round_table_is_curved_and_its_points_lie_where_rays_hit():
    with pytest.raises(ValueError, match="square cross-section"):
        Part((0, 0, 0), (1, 2, 3), axis=2)
    config = ToyConfig(
        num_scenes=4, num_frames=8, floor_classes=("table",), num_floor_objects=3, surface_noise_m=0, depth_noise=0
    )
    ds = ToyDataset(config)
    scene = next(s for s in map(ds.build, ds.scene_ids()) if (s.part_axis == 2).any())
    width = np.where(scene.part_axis == 2, scene.part_max[:, 0] - scene.part_min[:, 0], 0)
    top = int(np.argmax(width))  # the largest vertical cylinder: a round table top
    lo, hi = scene.part_min[top], scene.part_max[top]
    centre, radius = (lo + hi) / 2, (hi[0] - lo[0]) / 2
    assert scene.instance_class[scene.part_instance[top]] == "table" and radius >= 0.4
    points, normals = scene.points.astype(np.float64), scene.normals.astype(np.float64)
    off_axis = np.linalg.norm(points[:, :2] - centre[:2], axis=1)
    side = (np.abs(off_axis - radius) < 1e-5) & (points[:, 2] > lo[2] - 1e-5) & (points[:, 2] < hi[2] + 1e-5)
    assert side.sum() >= 12
    # the side's normals turn all the way round, pointing away from the axis
    azimuth = np.degrees(np.arctan2(normals[side, 1], normals[side, 0]))
    assert len(np.unique(np.round(azimuth))) >= 12 and len(np.unique(np.floor(azimuth / 90))) == 4
    horizontal = normals[side, :2] / np.linalg.norm(normals[side, :2], axis=1, keepdims=True)
    assert (np.einsum("ij,ij->i", horizontal, (points[side, :2] - centre[:2]) / off_axis[side, None]) > 0.99).all()
    # Cast from each camera to just inside each point: nothing is reached beyond it (no
    # point floats in the air, normals point out of the solids), and many are reached
    # right there (the first surface hit is the point itself).
    table = scene.point_instance == scene.part_instance[top]
    seen = np.zeros(len(points), bool)
    for pose in scene.cam_to_world:
        t = scene.first_hit_distance(pose[:3, 3], points - 1e-5 * normals)
        assert t.max() <= 1 + 1e-9
        seen |= t > 1 - 1e-4
    print(f"round table: {seen[table].mean():.0%} of its points and {seen[side].mean():.0%} of its rim seen")
    assert seen[table].mean() > 0.3 and seen[side].mean() > 0.3 and seen.mean() > 0.5


def test_surface_and_depth_noise_are_seeded_and_as_large_as_asked():
    def build(**noise):
        config = ToyConfig(num_frames=2, vertex_spacing_m=0.1, image_height=60, image_width=80, **noise)
        return ToyDataset(config).build("toy_0000")

    clean = build(surface_noise_m=0, depth_noise=0)
    noisy = build(surface_noise_m=0.003, depth_noise=0.002)
    again = build(surface_noise_m=0.003, depth_noise=0.002)
    np.testing.assert_array_equal(noisy.faces, clean.faces)  # the same mesh, its vertices moved
    moved = noisy.points.astype(np.float64) - clean.points
    along = np.einsum("ij,ij->i", moved, clean.normals)
    assert abs(along.std() / 0.003 - 1) < 0.05 and abs(along.mean()) < 3e-4
    assert np.abs(moved - along[:, None] * clean.normals).max() < 1e-5  # along the normals
    assert np.median(np.einsum("ij,ij->i", noisy.normals, clean.normals)) < 0.9999  # normals of the noisy mesh
    np.testing.assert_array_equal(noisy.points, again.points)
    np.testing.assert_array_equal(noisy.normals, again.normals)
    relative = [noisy.render(i).depth / clean.render(i).depth - 1 for i in range(2)]
    assert all(abs(r.std() / 0.002 - 1) < 0.05 for r in relative)
    assert not np.allclose(relative[0], relative[1])  # fresh noise in every frame
    np.testing.assert_array_equal(noisy.render(1).depth, again.render(1).depth)
    np.testing.assert_array_equal(noisy.render(1).labels, clean.render(1).labels)


def test_rgbd_folder_finds_frames_in_seq_subfolders():
    ds = RGBDFolderDataset(RGBDFolderConfig(paths=(str(shared_data("3dmatch-lounge")),), cloud_frame_stride=1))
    assert ds.scene_ids() == ["3dmatch-lounge"]
    src = ds.load("3dmatch-lounge")
    assert len(src.frame_names) == 5 and all(n.startswith("seq-01/frame-") for n in src.frame_names)
    assert src.frame_names == sorted(src.frame_names)
    frame = src.read_frame(0)
    assert frame.color.shape == (480, 640, 3) and frame.depth.dtype == np.float32
    assert 0.3 < np.median(frame.depth[frame.depth > 0]) < 5  # metres, not millimetres
    assert np.isclose(frame.intrinsics[0, 0], 570.342205)
    assert len(src.points) > 10000 and src.colors.dtype == np.uint8


def test_rgbd_folder_rejects_a_folder_without_intrinsics(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no scene in .* \(expected <scene>/camera-intrinsics.txt\)"):
        RGBDFolderDataset(RGBDFolderConfig(paths=(str(tmp_path),))).scene_ids()


def test_rgbd_folder_fingerprint_follows_image_contents_not_sizes(tmp_path):
    np.savetxt(tmp_path / "camera-intrinsics.txt", [[500, 0, 320], [0, 500, 240], [0, 0, 1]])
    for i in range(2):
        np.savetxt(tmp_path / f"frame-{i:06d}.pose.txt", np.eye(4))
        for suffix in ("color.jpg", "depth.png"):  # the fingerprint does not decode them
            (tmp_path / f"frame-{i:06d}.{suffix}").write_bytes(bytes(range(256)) * 4)
    ds = RGBDFolderDataset(RGBDFolderConfig(paths=(str(tmp_path),)))
    scene = ds.scene_ids()[0]
    before = ds.fingerprint(scene)
    assert RGBDFolderDataset(RGBDFolderConfig(paths=(str(tmp_path),))).fingerprint(scene) == before
    (tmp_path / "frame-000001.depth.png").write_bytes(bytes(reversed(range(256))) * 4)  # same size
    assert ds.fingerprint(scene) != before


def write_two_camera_folder(folder, room):
    """``layout_scene`` in the rgbd-folder layout with the optional colour-camera files;
    poses are the depth camera's, depth in millimetres."""
    folder.mkdir()
    np.savetxt(folder / "camera-intrinsics.txt", room.depth_intrinsics)
    np.savetxt(folder / "color-intrinsics.txt", room.color_intrinsics)
    np.savetxt(folder / "depth-to-color.txt", room.depth_to_color)
    for i, view in enumerate(room.views):
        prefix = folder / f"frame-{i:06d}"
        Image.fromarray(view.color.color).save(f"{prefix}.color.png")
        Image.fromarray(np.round(view.depth.depth * 1000).astype(np.uint16)).save(f"{prefix}.depth.png")
        np.savetxt(f"{prefix}.pose.txt", view.depth.cam_to_world)


def test_rgbd_folder_reads_a_separate_colour_camera_and_builds_the_cloud_in_the_depth_camera(tmp_path):
    """Colour 97x130 and depth 48x64 with their own intrinsics, the depth camera 15 cm beside
    the colour camera: the cloud (built in the depth camera) lies on the mesh, frames carry
    both calibrations and the colour camera's pose, and projection pairs points with colour
    pixels of their own class (99.8%; 98.4% if the offset file is dropped)."""
    room = layout_scene(num_frames=4, depth_offset_m=(0.15, 0.0, 0.0))
    write_two_camera_folder(tmp_path / "room", room)
    plan = plan_from_dict(
        {
            "store": str(tmp_path / "s.zarr"),
            "dataset": {"name": "rgbd-folder", "paths": [str(tmp_path / "room")], "cloud_frame_stride": 1},
            "stages": {"input": {}, "project": {"cut_bound": 2, "tolerance_kind": "absolute", "depth_tolerance": 0.05}},
        }
    )
    runner = Runner(plan)
    runner.run(fail_fast=True)
    group = runner.store.read("scenes/room/input")
    images, every = FrameImages(group), range(group.dims["T"])
    assert images.color(every).shape[1:3] == (97, 130) and images.depth(every).shape[1:] == (48, 64)
    np.testing.assert_allclose(group.load("frames/cam_to_world"), [v.color.cam_to_world for v in room.views], atol=1e-9)
    np.testing.assert_allclose(group.load("frames/depth_intrinsics")[0], room.depth_intrinsics, rtol=1e-6)
    points = group.load("points").astype(np.float64)
    triangles = room.scene.points[room.scene.faces]
    weights = np.random.default_rng(0).dirichlet([1, 1, 1], size=(len(triangles), 8))
    surface = np.einsum("fsk,fkd->fsd", weights, triangles).reshape(-1, 3)
    assert len(points) > 1000 and np.median(cKDTree(surface).query(points)[0]) < 0.012
    nearest = cKDTree(room.scene.points).query(points)[1]
    project = runner.store.read("scenes/room/project")
    point, frame, pixel = project.load("point_index"), project.load("frame_index"), project.load("pixel")
    rendered = np.stack([v.color.labels for v in room.views])[frame, pixel[:, 0], pixel[:, 1]]
    assert len(point) > 1000 and (rendered == room.labels[nearest[point]]).mean() > 0.995


@pytest.mark.realdata
def test_7scenes_points_agree_with_a_held_out_frames_depth(tmp_path):
    """Ingest the real kitchen; the depth of frames that built none of its point
    cloud, back-projected with their pose, lies about a centimetre from the cloud.

    (Comparing per pixel against a z-buffer of the projected cloud overstates the
    error: a 2 cm voxel cloud is sparse in the image, so pixels of near surfaces
    are filled by points of surfaces behind them.)
    """
    root = shared_data("7scenes-redkitchen")
    plan = plan_from_dict(
        {
            "store": str(tmp_path / "s.zarr"),
            "dataset": {"name": "rgbd-folder", "paths": [str(root)], "frame_stride": 5, "cloud_frame_stride": 2},
            "stages": {"input": {}},
        }
    )
    runner = Runner(plan)
    report = runner.run(fail_fast=True)
    assert report.counts()["ran"] == 1
    group = runner.store.read("scenes/7scenes-redkitchen/input")
    points = group.load("points").astype(np.float64)
    assert group.dims["T"] == 100 and group.dims["H"] == 480
    assert 50_000 < len(points) < 2_000_000
    tree = cKDTree(points)
    distances = []
    for held_out in (1, 25, 51, 77, 99):  # odd ingested frames: not in the cloud
        measured, _ = backproject_depth(
            torch.from_numpy(FrameImages(group).depth([held_out])[0]).double(),
            torch.from_numpy(group.array("frames/intrinsics")[held_out]).double(),
            torch.from_numpy(group.array("frames/cam_to_world")[held_out]),
            min_depth=0.1,
            max_depth=4.0,
        )
        distances.append(tree.query(measured.numpy())[0])
    median = float(np.median(np.concatenate(distances)))
    print(f"7-Scenes: {len(points)} points; held-out depth to cloud, median distance: {median * 100:.2f} cm")
    assert median < 0.015
