"""The ``openscene`` reader on scenes written in OpenScene's preprocessed layout, at its sizes:
ScanNet 150k points with 320x240 frames, Matterport 120k with 640x512, nuScenes 250k with six
800x450 cameras (``tests/openscene_layout.py``)."""

import os
import shutil

import numpy as np
import pytest
import torch
from openscene_layout import (
    MATTERPORT_HW,
    NUSCENES_CAMERAS,
    NUSCENES_HW,
    SCANNET_HW,
    box_room,
    camera_pose,
    compute_mapping,
    ignore_255,
    openscene_colors,
    write_matterport_images,
    write_matterport_region,
    write_nuscenes_scene,
    write_pth,
    write_scannet_scene,
)
from PIL import Image

from ovlift.datasets.openscene import SCANNET_INTRINSICS, OpenSceneConfig, OpenSceneDataset
from ovlift.datasets.openscene_points import read_point_file
from ovlift.errors import StageInputError
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.vocabularies import get_vocabulary

SCENE = "scene0011_00"
SCAN = "2t7WUuJeko7"
REGION = f"{SCAN}_region0"
NUSCENES = "scene-0003"
SCANNET_VIEWS = [
    (100, camera_pose((4, 3, 1.6), 200)),
    (0, camera_pose((3, 2.5, 1.5), 0)),
    (20, camera_pose((2, 2, 1.4), 90)),
]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One scene of each variant under one ``data/`` folder (written once: ~2 s)."""
    root = tmp_path_factory.mktemp("openscene") / "data"
    scannet = write_scannet_scene(root, SCENE, box_room(150_000, seed=1), SCANNET_VIEWS)
    train = write_scannet_scene(root, "scene0000_00", box_room(20_000, seed=2), SCANNET_VIEWS[:1], split="train")
    region = box_room(120_000, size=(5.0, 4.0, 2.8), num_classes=21, seed=3)
    other = box_room(1_000, size=(1.0, 1.0, 2.8), num_classes=21, seed=4, origin=(20.0, 20.0, 0.0))  # no camera inside
    matterport = write_matterport_region(root, REGION, region)
    write_matterport_region(root, f"{SCAN}_region1", other)
    views = [
        ("a1b2_i0_0", camera_pose((2.5, 2.0, 1.5), 30)),
        ("a1b2_i1_3", camera_pose((30.0, 30.0, 1.5), 0)),  # outside both regions' boxes
        ("c3d4_i2_5", camera_pose((1.5, 3.0, 1.2), -60)),
    ]
    matterport.frames = write_matterport_images(root, SCAN, region, views)
    street = box_room(250_000, size=(60.0, 40.0, 8.0), num_classes=16, seed=5, origin=(-30.0, -20.0, -2.0))
    nuscenes = write_nuscenes_scene(root, NUSCENES, street, (0.0, 0.0, 0.0))
    return root, {"scannet": scannet, "train": train, "matterport": matterport, "nuscenes": nuscenes}


def reader(root, **config) -> OpenSceneDataset:
    return OpenSceneDataset(OpenSceneConfig(root=str(root), **config))


VARIANTS = [("scannet", SCENE), ("matterport", REGION), ("nuscenes", NUSCENES)]


@pytest.mark.parametrize("variant, scene_id", VARIANTS)
def test_points_colours_and_labels_are_the_files_rows_in_order(written, variant, scene_id):
    """Every row, duplicates and points behind walls included, in the file's order: OpenScene's
    ``mask_full`` indexes exactly these rows. Colours back to the exact uint8, 255 to -1."""
    root, scenes = written
    room = scenes[variant].room
    source = reader(root, variant=variant).load(scene_id)
    assert source.points.dtype == np.float32 and np.array_equal(source.points, room.points)
    assert len(np.unique(source.points, axis=0)) < len(source.points)  # duplicates kept
    assert np.array_equal(source.labels, room.labels) and source.labels.dtype == np.int16
    if variant == "nuscenes":
        assert source.colors is None
    else:
        assert source.colors.dtype == np.uint8 and np.array_equal(source.colors, room.colors)
    label_set = {"scannet": "scannet20", "matterport": "matterport21", "nuscenes": "nuscenes16"}[variant]
    assert source.class_names == get_vocabulary(label_set).classes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_8bit_colour_comes_back_exactly(tmp_path, dtype):
    rgb = np.stack([np.arange(256), np.arange(256)[::-1], np.full(256, 128)], axis=1).astype(np.uint8)
    colors = (rgb.astype(dtype) / 127.5 - 1).astype(dtype)
    path = write_pth(tmp_path / "x.pth", np.zeros((256, 3), np.float32), colors, np.zeros(256))
    cloud = read_point_file(path, "x", get_vocabulary("scannet20").classes, "scannet20")
    assert np.array_equal(cloud.colors, rgb)


@pytest.mark.parametrize("numpy1", [True, False])
def test_files_of_numpy1_and_numpy2_load_without_unpickling_code(tmp_path, numpy1):
    room = box_room(1000)
    labels = ignore_255(room.labels, np.float64)
    path = write_pth(tmp_path / "x.pth", room.points, openscene_colors(room.colors), labels, numpy1)
    assert (b"numpy.core.multiarray" in path.read_bytes()) == numpy1
    cloud = read_point_file(path, "x", get_vocabulary("scannet20").classes, "scannet20")
    assert np.array_equal(cloud.points, room.points)


class Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_file_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save((np.zeros((2, 3), np.float32), Hostile(marker), np.zeros(2)), tmp_path / "x.pth")
    with pytest.raises(StageInputError, match=r"scene 'x': cannot read .*x.pth' as a torch file of tensors and arrays"):
        read_point_file(tmp_path / "x.pth", "x", ("a",), "s")
    assert not marker.exists()
    torch.save((np.zeros((2, 3), np.float32), np.array([None, None]), np.zeros(2)), tmp_path / "y.pth")
    with pytest.raises(StageInputError, match="cannot read"):  # object arrays are refused too
        read_point_file(tmp_path / "y.pth", "y", ("a",), "s")


POINTS = np.zeros((4, 3), np.float32)
RGB = openscene_colors(np.full((4, 3), 200))


@pytest.mark.parametrize(
    "content, message",
    [
        ({"coords": POINTS}, r"expected OpenScene's tuple \(coords, colors, labels\), found dict"),
        ((POINTS, RGB), r"found a 2-tuple"),
        ((POINTS[:, :2], RGB, np.zeros(4)), r"coords expected \(N, 3\) float metres, found float32 \(4, 2\)"),
        ((POINTS, RGB[:3], np.zeros(4)), r"colors expected \(4, 3\) floats in \[-1, 1\].*found float32 \(3, 3\)"),
        (
            (POINTS, RGB, np.zeros(5)),
            r"labels expected \(4,\) numbers \(one per coordinate row\), found float64 \(5,\)",
        ),
        ((POINTS, np.full((4, 3), 200.0), np.zeros(4)), r"colors expected 8-bit RGB stored as rgb / 127.5 - 1"),
        ((POINTS, np.full((4, 3), 0.3), np.zeros(4)), r"found \[0.3, 0.3, 0.3\] at row 0"),  # [0, 1] colours
        ((POINTS, RGB, np.array([0, 1, 20, 255.0])), r"labels expected scannet20 classes 0..19 or 255.*found \[20\]"),
        ((POINTS, RGB, np.array([0, 0.5, 0, 0])), r"found \[0.5\]"),
        ((POINTS, RGB, np.array([0, np.nan, np.inf, 0])), r"found \[inf, nan\]"),
        ((POINTS + np.nan, RGB, np.zeros(4)), r"coords hold NaN"),
    ],
)
def test_malformed_point_files_name_scene_file_expected_and_found(tmp_path, content, message):
    torch.save(content, tmp_path / f"{SCENE}.pth")
    with pytest.raises(StageInputError, match=rf"scene '{SCENE}': .*{SCENE}.pth: .*{message}"):
        read_point_file(tmp_path / f"{SCENE}.pth", SCENE, get_vocabulary("scannet20").classes, "scannet20")


def test_ignore_values_and_integer_labels(tmp_path):
    path = write_pth(tmp_path / "x.pth", POINTS, RGB, np.array([19, -100, 255, 0], np.int64))
    cloud = read_point_file(path, "x", get_vocabulary("scannet20").classes, "scannet20")
    assert cloud.labels.tolist() == [19, -1, -1, 0]


def test_scannet_frames_depth_poses_and_intrinsics(written):
    root, scenes = written
    source = reader(root).load(SCENE)
    assert source.frame_names == ["0", "20", "100"]  # by index, as OpenScene sorts them
    by_name = {f.name: f for f in scenes["scannet"].frames}
    for i, name in enumerate(source.frame_names):
        frame, expected = source.read_frame(i), by_name[name]
        assert frame.name == name and frame.color.shape == (*SCANNET_HW, 3) and frame.color.dtype == np.uint8
        assert np.array_equal(frame.color, np.asarray(Image.open(expected.files["color"]).convert("RGB")))
        assert np.abs(frame.color.astype(int) - expected.color).mean() < 12  # JPEG of what was rendered (BGR: ~70)
        assert frame.depth.dtype == np.float32 and np.array_equal(frame.depth, expected.depth_raw / np.float32(1000))
        assert np.array_equal(frame.cam_to_world, expected.cam_to_world)
        assert frame.depth_intrinsics is None and frame.depth_to_color is None  # registered, as OpenScene fuses
        np.testing.assert_allclose(frame.intrinsics, expected.intrinsics, rtol=0, atol=1e-9)
    np.testing.assert_allclose(source.read_frame(0).intrinsics[0], [288.9353025, 0, 159.5], rtol=1e-12)


def test_scannet_without_intrinsics_file_uses_the_fusion_constants(written, tmp_path):
    root, scenes = written
    shutil.copytree(root / "scannet_2d", tmp_path / "scannet_2d")
    shutil.copytree(root / "scannet_3d", tmp_path / "scannet_3d")
    (tmp_path / "scannet_2d" / "intrinsics.txt").unlink()
    frame = reader(tmp_path).load(SCENE).read_frame(0)
    np.testing.assert_allclose(frame.intrinsics, scenes["scannet"].frames[0].intrinsics, rtol=1e-15)
    np.testing.assert_allclose(SCANNET_INTRINSICS, scenes["scannet"].frames[0].intrinsics, rtol=1e-15)


def test_frames_stored_smaller_scale_the_intrinsics(written):
    root, _ = written
    full = reader(root).load(SCENE).read_frame(0)
    half = reader(root, image_height=120, image_width=160).load(SCENE).read_frame(0)
    assert half.color.shape == (120, 160, 3) and half.depth.shape == (120, 160)
    # the half-pixel rule: fx / 2, (cx + 0.5) / 2 - 0.5
    np.testing.assert_allclose(half.intrinsics[0], [full.intrinsics[0, 0] / 2, 0, 79.5], rtol=1e-12)
    np.testing.assert_allclose(half.intrinsics[1], [0, full.intrinsics[1, 1] / 2, 59.5], rtol=1e-12)


def test_matterport_frames_are_the_scans_cameras_inside_the_region(written):
    root, scenes = written
    data = reader(root, variant="matterport")
    assert data.scene_ids() == [REGION, f"{SCAN}_region1"] and data.named_splits() == {"test": data.scene_ids()}
    source = data.load(REGION)
    assert source.frame_names == ["a1b2_i0_0", "c3d4_i2_5"]  # the camera at (30, 30) is outside
    for i, expected in enumerate(f for f in scenes["matterport"].frames if f.name in source.frame_names):
        frame = source.read_frame(i)
        assert frame.color.shape == (*MATTERPORT_HW, 3)
        assert np.array_equal(frame.depth, expected.depth_raw / np.float32(4000))
        assert np.array_equal(frame.cam_to_world, expected.cam_to_world)
        np.testing.assert_array_equal(frame.intrinsics, expected.intrinsics)
    # no camera inside region1's box: the nearest ones (OpenScene's test-split rule), or an error
    assert data.load(f"{SCAN}_region1").frame_names == ["a1b2_i0_0", "a1b2_i1_3", "c3d4_i2_5"]
    assert reader(root, variant="matterport", nearest_views=1).load(f"{SCAN}_region1").frame_names == ["a1b2_i1_3"]
    with pytest.raises(ValueError, match=rf"scene '{SCAN}_region1': no camera of scan '{SCAN}' inside"):
        reader(root, variant="matterport", nearest_views=0).load(f"{SCAN}_region1")


def test_matterport_k_class_files_need_their_label_set(written, tmp_path):
    room = box_room(2_000, num_classes=160, seed=6)
    write_matterport_region(tmp_path, REGION, room, folder="matterport_3d_160")
    shutil.copytree(written[0] / "matterport_2d", tmp_path / "matterport_2d")
    data = reader(tmp_path, variant="matterport", points_folder="matterport_3d_160", label_set="matterport160")
    source = data.load(REGION)
    assert np.array_equal(source.labels, room.labels) and len(source.class_names) == 160
    with pytest.raises(StageInputError, match=r"expected matterport21 classes 0..20 or 255.*matterport40/80/160"):
        reader(tmp_path, variant="matterport", points_folder="matterport_3d_160").load(REGION)
    with pytest.raises(ValueError, match=r"label_set 'scannet20' is not one of matterport's"):
        OpenSceneConfig(root=str(tmp_path), variant="matterport", label_set="scannet20")


def test_nuscenes_frames_are_the_six_cameras_without_depth(written):
    root, scenes = written
    source = reader(root, variant="nuscenes").load(NUSCENES)
    assert source.frame_names == list(NUSCENES_CAMERAS)
    for i, expected in enumerate(scenes["nuscenes"].frames):
        frame = source.read_frame(i)
        assert frame.depth is None and frame.color.shape == (*NUSCENES_HW, 3)
        assert np.array_equal(frame.cam_to_world, expected.cam_to_world)
        np.testing.assert_array_equal(frame.intrinsics, expected.intrinsics)
    assert reader(root, variant="nuscenes", cameras=["front"]).load(NUSCENES).frame_names == ["front"]


def test_scene_ids_splits_and_stride(written):
    root, _ = written
    data = reader(root)
    assert data.scene_ids() == ["scene0000_00", SCENE]
    assert data.named_splits() == {"train": ["scene0000_00"], "val": [SCENE]}
    assert reader(root, splits=["val"]).scene_ids() == [SCENE]
    assert reader(root, frame_stride=2).load(SCENE).frame_names == ["0", "100"]
    with pytest.raises(FileNotFoundError, match=r"no .pth files in .*scannet_3d/test' \(split 'test'\)"):
        reader(root, splits=["test"]).scene_ids()
    with pytest.raises(KeyError, match="no scene 'scene9999_00'"):
        data.load("scene9999_00")


def test_fingerprint_follows_the_files_contents(written, tmp_path):
    shutil.copytree(written[0] / "scannet_2d", tmp_path / "scannet_2d")
    shutil.copytree(written[0] / "scannet_3d", tmp_path / "scannet_3d")
    first = reader(tmp_path).fingerprint(SCENE)
    assert reader(tmp_path).fingerprint(SCENE) == first
    assert reader(tmp_path, frame_stride=2).fingerprint(SCENE) != first
    pose = tmp_path / "scannet_2d" / SCENE / "pose" / "20.txt"
    pose.write_text(pose.read_text().replace("1.400000", "1.500000"))
    assert reader(tmp_path).fingerprint(SCENE) not in (first,)


@pytest.mark.parametrize(
    "damage, error, message",
    [
        (lambda f: (f / "pose" / "20.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n"), StageInputError,
         r"pose/20.txt: expected OpenScene's 4x4 camera-to-world pose, found float64 \(3, 4\)"),
        (lambda f: (f / "pose" / "20.txt").unlink(), FileNotFoundError,
         r"missing .*pose/20.txt \(OpenScene's camera-to-world"),
        (lambda f: Image.fromarray(np.zeros((480, 640), np.uint16)).save(f / "depth" / "20.png"), StageInputError,
         r"depth/20.png is \(480, 640\) but 20.jpg is \(240, 320\); expected OpenScene's depth at its colour"),
        (lambda f: Image.fromarray(np.zeros((240, 320), np.uint8)).save(f / "depth" / "20.png"), ValueError,
         r"depth/20.png is uint8 \(240, 320\); expected OpenScene's uint16 depth PNG \(1000 per metre\)"),
    ],
)  # fmt: skip
def test_bad_frame_files_name_scene_file_expected_and_found(written, tmp_path, damage, error, message):
    shutil.copytree(written[0] / "scannet_2d", tmp_path / "scannet_2d")
    shutil.copytree(written[0] / "scannet_3d", tmp_path / "scannet_3d")
    damage(tmp_path / "scannet_2d" / SCENE)
    source = reader(tmp_path).load(SCENE)
    with pytest.raises(error, match=rf"scene '{SCENE}': .*{message}"):
        source.read_frame(source.frame_names.index("20"))


def test_missing_folders_and_misnamed_files_are_named(written, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"openscene: '.*scannet_3d' is not a folder"):
        reader(tmp_path).scene_ids()
    shutil.copytree(written[0] / "scannet_3d", tmp_path / "scannet_3d")
    with pytest.raises(FileNotFoundError, match=rf"scene '{SCENE}': no frames folder '.*scannet_2d/{SCENE}'"):
        reader(tmp_path).load(SCENE)
    shutil.copy(tmp_path / "scannet_3d" / "val" / f"{SCENE}_vh_clean_2.pth", tmp_path / "scannet_3d" / "val" / "x.pth")
    with pytest.raises(ValueError, match=r"'.*x.pth' is not named <scene>_vh_clean_2.pth"):
        reader(tmp_path).scene_ids()


def pairs(point, frame, pixel):
    return set(zip(point.tolist(), frame.tolist(), pixel[:, 0].tolist(), pixel[:, 1].tolist()))


@pytest.mark.parametrize(
    "variant, scene_id, project",
    [
        ("scannet", SCENE, {"cut_bound": 10, "depth_tolerance": 0.25}),
        ("matterport", REGION, {"cut_bound": 10, "depth_tolerance": 0.02}),
        ("nuscenes", NUSCENES, {"cut_bound": 5}),
    ],
)
def test_ingest_keeps_the_rows_and_projection_finds_openscenes_pairs(written, tmp_path, variant, scene_id, project):
    """Through the runner: the store holds the ``.pth`` rows as they are, and ``project``
    with OpenScene's settings pairs points with the pixels OpenScene's ``compute_mapping``
    gives on the same files (a wrong pose, intrinsics or depth unit would pair almost none)."""
    root, _ = written
    plan = plan_from_dict(
        {
            "store": str(tmp_path / "s.zarr"),
            "dataset": {"name": "openscene", "root": str(root), "variant": variant},
            "stages": {"input": {}, "project": project},
        }
    )
    runner = Runner(plan)
    runner.run(scenes=[scene_id], fail_fast=True)
    scene = runner.store.read(f"scenes/{scene_id}/input")
    source = reader(root, variant=variant).load(scene_id)
    assert np.array_equal(scene.load("points"), source.points) and np.array_equal(scene.load("labels"), source.labels)
    group = runner.store.read(f"scenes/{scene_id}/project")
    found = pairs(group.load("point_index"), group.load("frame_index"), group.load("pixel"))
    expected = set()
    for i in range(source.num_frames):
        frame = source.read_frame(i)
        hw = frame.color.shape[:2]
        mapping = compute_mapping(
            frame.cam_to_world,
            source.points,
            frame.depth,
            frame.intrinsics,
            hw[::-1],
            project.get("depth_tolerance"),
            project["cut_bound"],
        )
        seen = np.flatnonzero(mapping[:, 2])
        expected |= set(zip(seen.tolist(), [i] * len(seen), mapping[seen, 0].tolist(), mapping[seen, 1].tolist()))
    print(f"{variant}: {len(expected)} OpenScene pairs, {len(found)} found, {len(found & expected)} shared")
    assert len(expected) > 20_000 and len(found & expected) / len(expected | found) > 0.999
