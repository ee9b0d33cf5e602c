"""The ``s3dis`` reader on a tiny dataset written in the published S3DIS and 2D-3D-S layouts.

No real S3DIS or 2D-3D-S sample is under ../shared/data, so every check here runs on
``tests/s3dis_layout.py``'s toy rooms.
"""

import json
import shutil

import numpy as np
import pytest
from layout_scene import layout_scene
from PIL import Image
from s3dis_layout import S3DIS_TO_AREA_5B, S3DISLayout

from ovlift.cache_schema import IGNORE_LABEL
from ovlift.datasets.s3dis import S3DISConfig, S3DISDataset
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.vocabularies import S3DIS13

HW = (72, 96)
OFFICE = "Area_5_office_1"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Area_5/office_1 (rotated 90 degrees on disk; views 0-1 in area_5a, 2-3 in area_5b),
    Area_5/office_11 (one view) and Area_1/WC_1 (rotated 180 degrees, one view)."""
    scene = layout_scene(num_frames=4, color_hw=HW, depth_hw=HW)
    layout = S3DISLayout(tmp_path_factory.mktemp("s3dis"))
    rooms = {
        OFFICE: layout.room(scene, 5, "office_1", ["area_5a"] * 2 + ["area_5b"] * 2, angle_deg=90, missing_block=4),
        "Area_5_office_11": layout.room(scene, 5, "office_11", ["area_5a"], point_stride=25),
        "Area_1_WC_1": layout.room(scene, 1, "WC_1", ["area_1"], angle_deg=180, point_stride=25),
    }
    return layout, rooms, scene


def _dataset(layout, **config) -> S3DISDataset:
    config = {"s3dis_root": str(layout.s3dis_root), "images_root": str(layout.images_root), "areas": (1, 5)} | config
    return S3DISDataset(S3DISConfig(**config))


@pytest.fixture
def copied(written, tmp_path):
    """A copy of the written dataset that a test may break."""
    layout = written[0]
    copy = S3DISLayout(tmp_path)
    shutil.copytree(layout.s3dis_root, copy.s3dis_root)
    shutil.copytree(layout.images_root, copy.images_root)
    return copy


def test_points_labels_and_instances_are_the_annotation_files_in_name_order(written):
    layout, rooms, _ = written
    room = rooms[OFFICE]
    source = _dataset(layout).load(OFFICE)
    assert source.points.dtype == np.float32 and source.colors.dtype == np.uint8
    np.testing.assert_allclose(source.points, room.points_on_disk, atol=1e-5)
    np.testing.assert_array_equal(source.colors, room.colors)
    np.testing.assert_array_equal(source.labels, room.labels)
    np.testing.assert_array_equal(source.instances, room.instances)
    assert source.class_names == S3DIS13.classes
    assert source.normals is None and source.faces is None
    # the toy cabinet is written as 'stairs', which S3DIS readers count as clutter
    annotations = sorted(p.name for p in (layout.s3dis_root / "Area_5/office_1/Annotations").iterdir())
    stairs = annotations.index("stairs_1.txt")
    assert set(source.labels[source.instances == stairs]) == {S3DIS13.index("clutter")}
    assert len(np.unique(source.instances)) == len(annotations)


def test_a_room_gets_its_own_images_from_both_halves_of_area_5(written):
    layout, rooms, _ = written
    ds = _dataset(layout)
    assert ds.scene_ids() == ["Area_1_WC_1", "Area_5_office_1", "Area_5_office_11"]
    office = ds.load(OFFICE)
    assert office.frame_names == rooms[OFFICE].frame_names  # not office_11's image
    assert [n.split("/")[0] for n in office.frame_names] == ["area_5a", "area_5a", "area_5b", "area_5b"]
    assert ds.load("Area_5_office_11").frame_names == rooms["Area_5_office_11"].frame_names
    assert ds.load("Area_1_WC_1").frame_names[0].startswith("area_1/camera_")
    strided = _dataset(layout, frame_stride=2).load(OFFICE)
    assert strided.frame_names == rooms[OFFICE].frame_names[::2]


def test_frames_carry_the_published_pose_depth_and_semantic_labels(written):
    layout, rooms, scene = written
    room = rooms[OFFICE]
    source = _dataset(layout).load(OFFICE)
    for i, view in enumerate(room.views):
        frame = source.read_frame(i)
        truth = scene.views[view].color
        np.testing.assert_array_equal(frame.color, truth.color)
        np.testing.assert_allclose(frame.intrinsics, truth.intrinsics)
        np.testing.assert_allclose(frame.cam_to_world, room.cam_to_world_on_disk[i], atol=1e-9)  # 5b mapped into 5
        assert frame.depth.dtype == np.float32 and frame.depth.shape == HW
        np.testing.assert_array_equal(frame.depth, room.depth_m[i])
        assert (frame.depth[:4, :4] == 0).all()  # 65535: no reading
        valid = frame.depth > 0
        np.testing.assert_allclose(frame.depth[valid], scene.views[view].depth.depth[valid], atol=1 / 1024)
        np.testing.assert_array_equal(frame.labels, room.pixel_labels[i])
        assert (frame.labels[:4, :4] == IGNORE_LABEL).all()  # #0D0D0D: no mesh
        assert frame.depth_intrinsics is None and frame.instances is None


def test_frames_may_be_stored_smaller_with_their_intrinsics(written):
    layout, rooms, scene = written
    room = rooms[OFFICE]
    full = _dataset(layout).load(OFFICE).read_frame(1)
    half = _dataset(layout, image_height=36, image_width=48).load(OFFICE).read_frame(1)
    assert half.color.shape == (36, 48, 3) and half.depth.shape == (36, 48) and half.labels.shape == (36, 48)
    k = scene.views[room.views[1]].color.intrinsics
    np.testing.assert_allclose(half.intrinsics[[0, 1], [0, 1]], k[[0, 1], [0, 1]] / 2)
    np.testing.assert_allclose(half.intrinsics[:2, 2], (k[:2, 2] + 0.5) / 2 - 0.5)
    # nearest pixel centre: every stored depth and label is one of the full image's, never a blend
    np.testing.assert_array_equal(half.depth, full.depth[1::2, 1::2])
    np.testing.assert_array_equal(half.labels, full.labels[1::2, 1::2])
    np.testing.assert_array_equal(half.cam_to_world, full.cam_to_world)


def test_area_5b_poses_stay_in_area_5b_coordinates_without_the_correction(written):
    layout, rooms, _ = written
    room = rooms[OFFICE]
    source = _dataset(layout, correct_area_5b=False).load(OFFICE)
    for i, name in enumerate(room.frame_names):
        expected = room.cam_to_world_on_disk[i]
        if name.startswith("area_5b/"):
            expected = S3DIS_TO_AREA_5B @ expected
        np.testing.assert_allclose(source.read_frame(i).cam_to_world, expected, atol=1e-9)


def test_align_rooms_turns_points_and_cameras_by_the_rooms_alignment_angle(written):
    layout, rooms, scene = written
    ds = _dataset(layout, align_rooms=True)
    for scene_id in (OFFICE, "Area_1_WC_1"):  # 90 and 180 degrees
        room = rooms[scene_id]
        source = ds.load(scene_id)
        # the reader turns about the centre of the millimetre text, the writer about the exact one
        np.testing.assert_allclose(source.points, room.points_aligned, atol=2e-3)
        np.testing.assert_array_equal(source.labels, room.labels)
        for i, view in enumerate(room.views):
            np.testing.assert_allclose(source.read_frame(i).cam_to_world, scene.scene.cam_to_world[view], atol=2e-3)


def test_named_splits_train_on_areas_1_to_4_and_6_and_hold_out_area_5(written):
    layout = written[0]
    splits = _dataset(layout).named_splits()
    assert splits == {
        "train": ["Area_1_WC_1"],
        "val": ["Area_5_office_1", "Area_5_office_11"],
        "test": ["Area_5_office_1", "Area_5_office_11"],
    }
    assert _dataset(layout, areas=(1,)).named_splits() == {"train": ["Area_1_WC_1"]}


def test_the_releases_stray_control_bytes_are_repaired(written, copied, caplog):
    """Area_5/hallway_6/Annotations/ceiling_1.txt line 180389 holds '185\\x00187' (a NUL for a
    space); Area_5/office_19/Annotations/ceiling_1.txt line 323474 '103.0\\x100000' (a byte
    inside a number)."""
    path = copied.s3dis_root / "Area_5/office_1/Annotations/ceiling_1.txt"
    lines = path.read_bytes().split(b"\n")
    x, y, z, r, g, b = lines[2].split(b" ")
    lines[2] = b" ".join([x, y, z, r]) + b"\x00" + b" ".join([g, b])
    x, *rest = lines[3].split(b" ")
    lines[3] = b" ".join([x[:2] + b"\x10" + x[2:], *rest])
    path.write_bytes(b"\n".join(lines))
    with caplog.at_level("WARNING", logger="ovlift.datasets.s3dis"):
        source = _dataset(copied).load(OFFICE)
    assert "ceiling_1.txt: 2 stray control byte(s) repaired" in caplog.text
    room = written[1][OFFICE]
    np.testing.assert_allclose(source.points, room.points_on_disk, atol=1e-5)
    np.testing.assert_array_equal(source.colors, room.colors)


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"1.0 2.0 3.0 4 5\n", "columns changed from 6 to 5"), (b"19.302 -9.1o0 1.785 146 137 106\n", "-9.1o0")],
)
def test_a_malformed_point_line_names_the_room_the_file_and_the_format(copied, line, expected):
    path = copied.s3dis_root / "Area_5/office_1/Annotations/chair_1.txt"
    path.write_bytes(path.read_bytes() + line)
    with pytest.raises(ValueError, match=f"scene '{OFFICE}'.*chair_1.txt.*{expected}.*x y z r g b"):
        _dataset(copied).load(OFFICE)


def test_missing_or_malformed_frame_files_name_the_scene_the_file_and_what_was_expected(copied):
    source = _dataset(copied).load(OFFICE)
    stem = source.frame_names[1].split("/")[1]
    data = copied.images_root / "area_5a/data"
    (data / f"depth/{stem}_domain_depth.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"scene '{OFFICE}'.*{stem}_domain_depth.png.*uint16 PNG in 1/512 m"):
        source.read_frame(1)
    pose_path = data / f"pose/{source.frame_names[0].split('/')[1]}_domain_pose.json"
    pose = json.loads(pose_path.read_text())
    pose["camera_rt_matrix"] = pose["camera_rt_matrix"][:2]
    pose_path.write_text(json.dumps(pose))
    with pytest.raises(ValueError, match=rf"scene '{OFFICE}'.*_domain_pose.json.*'camera_rt_matrix' as a 3x4"):
        source.read_frame(0)
    del pose["camera_k_matrix"]
    pose_path.write_text(json.dumps(pose))
    with pytest.raises(ValueError, match=r"_domain_pose.json.*'camera_k_matrix' as a 3x3.*found missing"):
        source.read_frame(0)
    pose_path.write_text("{not json")
    with pytest.raises(ValueError, match=rf"scene '{OFFICE}'.*cannot read pose file.*as JSON"):
        source.read_frame(0)
    depth_path = copied.images_root / f"area_5b/data/depth/{source.frame_names[2].split('/')[1]}_domain_depth.png"
    Image.fromarray(np.zeros(HW, np.uint8)).save(depth_path)
    with pytest.raises(ValueError, match=rf"scene '{OFFICE}'.*_domain_depth.png.*expected single-channel uint16"):
        source.read_frame(2)
    rgb_path = copied.images_root / f"area_5b/data/rgb/{source.frame_names[2].split('/')[1]}_domain_rgb.png"
    rgb_path.write_bytes(rgb_path.read_bytes()[:40])  # truncated (read before the depth; input adds the scene)
    with pytest.raises(ValueError, match=r"cannot read image '.*_domain_rgb.png' \(expected an 8-bit RGB PNG\)"):
        source.read_frame(2)


def test_a_non_finite_pose_is_passed_on_as_invalid(copied):
    source = _dataset(copied).load(OFFICE)
    pose_path = copied.images_root / f"area_5a/data/pose/{source.frame_names[0].split('/')[1]}_domain_pose.json"
    pose = json.loads(pose_path.read_text())
    pose["camera_rt_matrix"][0][3] = float("-inf")
    pose_path.write_text(json.dumps(pose))
    assert np.isnan(source.read_frame(0).cam_to_world).all()


def test_dataset_level_problems_are_named(copied):
    labels = copied.images_root / "assets/semantic_labels.json"
    labels.rename(labels.with_suffix(".bak"))
    with pytest.raises(FileNotFoundError, match=r"semantic_labels.json.*frame_labels: false"):
        _dataset(copied).load(OFFICE)
    assert _dataset(copied, frame_labels=False).load(OFFICE).read_frame(0).labels is None
    labels.with_suffix(".bak").rename(labels)

    annotations = copied.s3dis_root / "Area_5/office_1/Annotations"
    shutil.copy(annotations / "wall_1.txt", annotations / "wall_1 (1).txt")  # a copy some downloads hold
    assert len(_dataset(copied).load(OFFICE).points) == len(_dataset(copied).load(OFFICE).labels)
    np.testing.assert_array_equal(
        _dataset(copied).load(OFFICE).instances.max() + 1, len(list(annotations.iterdir())) - 1
    )
    (annotations / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=rf"scene '{OFFICE}'.*notes.txt.*<class>_<k>.txt"):
        _dataset(copied).load(OFFICE)
    (annotations / "notes.txt").unlink()

    angles = copied.s3dis_root / "Area_5/Area_5_alignmentAngle.txt"
    angles.write_text(angles.read_text().replace("office_1 90\n", ""))
    with pytest.raises(ValueError, match=rf"scene '{OFFICE}'.*'office_1' is not listed in.*Area_5_alignmentAngle.txt"):
        _dataset(copied, align_rooms=True).load(OFFICE)

    empty_room = copied.s3dis_root / "Area_5/office_2/Annotations"
    empty_room.mkdir(parents=True)
    shutil.copy(annotations / "chair_1.txt", empty_room)
    with pytest.raises(
        FileNotFoundError, match=r"scene 'Area_5_office_2'.*camera_<uuid>_office_2_frame_<k>_domain_rgb"
    ):
        _dataset(copied).load("Area_5_office_2")

    with pytest.raises(FileNotFoundError, match=r"Area_2.*expected Stanford3dDataset_v1.2/Area_2"):
        _dataset(copied, areas=(1, 2)).scene_ids()
    aligned = copied.s3dis_root.with_name("Stanford3dDataset_v1.2_Aligned_Version")
    copied.s3dis_root.rename(aligned)
    with pytest.raises(ValueError, match="aligned release.*expected the unaligned Stanford3dDataset_v1.2"):
        _dataset(copied, s3dis_root=str(aligned)).scene_ids()


def test_fingerprint_follows_file_contents_and_config(copied):
    before = _dataset(copied).fingerprint(OFFICE)
    assert _dataset(copied).fingerprint(OFFICE) == before
    assert _dataset(copied, frame_stride=2).fingerprint(OFFICE) != before
    chair = copied.s3dis_root / "Area_5/office_1/Annotations/chair_1.txt"
    text = chair.read_bytes()
    chair.write_bytes(text.replace(b"1", b"2", 1))  # same size, other content
    changed = _dataset(copied).fingerprint(OFFICE)
    assert changed != before
    source = _dataset(copied).load(OFFICE)
    pose = copied.images_root / f"area_5b/data/pose/{source.frame_names[3].split('/')[1]}_domain_pose.json"
    pose.write_text(pose.read_text().replace('"frame_num": 3', '"frame_num": 4'))
    assert _dataset(copied).fingerprint(OFFICE) != changed


@pytest.mark.parametrize(
    ("align_rooms", "size"), [(False, None), (True, (60, 80))], ids=["as-published", "aligned-smaller"]
)
def test_input_and_project_put_points_on_pixels_of_their_own_label(written, tmp_path, align_rooms, size):
    """The point cloud projected into the 2D-3D-S frames (5b's through the correction, with or
    without alignment) lands on pixels whose semantic image has the point's class: every
    pixel inside a label region agrees; only pixels on a region's border may not (a point
    rounds to the pixel beside its own at 72x96). Depth rendered from the mesh is exact, so the
    visibility test is Matterport's tight one (2 % of the depth)."""
    layout = written[0]
    plan = plan_from_dict(
        {
            "store": str(tmp_path / "s.zarr"),
            "dataset": {
                "name": "s3dis",
                "s3dis_root": str(layout.s3dis_root),
                "images_root": str(layout.images_root),
                "areas": [5],
                "align_rooms": align_rooms,
                "image_height": size and size[0],
                "image_width": size and size[1],
            },
            "stages": {"input": {}, "project": {"cut_bound": 2, "depth_tolerance": 0.02}},
        }
    )
    runner = Runner(plan)
    report = runner.run(scenes=[OFFICE], fail_fast=True)
    assert report.counts()["ran"] == 2
    scene = runner.store.read(f"scenes/{OFFICE}/input")
    project = runner.store.read(f"scenes/{OFFICE}/project")
    assert scene.info["class_names"] == list(S3DIS13.classes)
    assert scene.load("frames/pose_valid").all()
    pixel_labels = scene.load("frames/labels")
    frame, pixel = project.load("frame_index"), project.load("pixel").astype(np.int64)
    seen = pixel_labels[frame, pixel[:, 0], pixel[:, 1]]
    own = scene.load("labels")[project.load("point_index")]
    judged = (seen != IGNORE_LABEL) & (own != IGNORE_LABEL)
    uniform = np.ones(pixel_labels.shape, bool)  # the pixel's 3x3 neighbourhood has one label
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            uniform &= pixel_labels == np.roll(pixel_labels, (dy, dx), axis=(1, 2))
    inside = judged & uniform[frame, pixel[:, 0], pixel[:, 1]]
    agree = seen == own
    print(f"s3dis (align_rooms={align_rooms}): {judged.sum()} correspondences, agreement {agree[judged].mean():.4f}")
    assert inside.sum() > 20000 and agree[inside].mean() > 0.999
    assert agree[judged].mean() > 0.97
    for k in range(4):  # area_5b's frames (2, 3) as well as area_5a's
        assert (judged & (frame == k)).sum() > 3000 and agree[judged & (frame == k)].mean() > 0.95
