import json
import shutil

import numpy as np
import pytest
from conftest import shared_data
from layout_scene import layout_scene
from matterport_layout import MAPPING_ROWS, write_mapping_table, write_matterport_scan, write_region_ply
from PIL import Image

from ovlift.cache_schema.groups.frames import FrameImages
from ovlift.datasets.category_table import CategoryTable
from ovlift.datasets.matterport import MatterportConfig, MatterportDataset, read_conf, row_classes
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.vocabularies import get_vocabulary

REGION0 = "17DRP5sb8fy_region0"
REGION1 = "17DRP5sb8fy_region1"
OPENSCENE_21 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39, 22)
"""OpenScene's ``remapper`` order of NYU40 ids (preprocess_3d_matterport.py)."""


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    scan = write_matterport_scan(root / "scans", layout_scene(num_frames=4, color_hw=(96, 120), depth_hw=(96, 120)))
    return scan, write_mapping_table(root / "category_mapping.tsv")


def dataset(scan, table=None, **config) -> MatterportDataset:
    return MatterportDataset(
        MatterportConfig(root=str(scan.root), category_table=str(table) if table else None, **config)
    )


def copy_scan(scan, tmp_path):
    """A private copy of the written scan (for tests that break a file)."""
    shutil.copytree(scan.root, tmp_path / "scans")
    return type(scan)(**{**scan.__dict__, "root": tmp_path / "scans"})


def openscene_vertex_labels(faces, face_category, mapping, num_points, num_classes):
    """OpenScene's per-vertex vote, transcribed: count each face's class (0 = unlabelled) on its
    three vertices, argmax, 0 -> ignore (-1 here), class k -> k - 1."""
    counts = np.zeros((num_points, num_classes + 1), np.int32)
    remapped = mapping[face_category]
    for row in range(len(faces)):
        for i in range(3):
            counts[faces[row][i], remapped[row]] += 1
    return np.argmax(counts, axis=1) - 1


def openscene_mapping(label_set: str) -> np.ndarray:
    """Face category_id -> OpenScene's class + 1 (0: unlabelled), from the toy table's rows."""
    mapping = np.zeros(max(r[0] for r in MAPPING_ROWS.values()) + 1, np.int64)
    classes = get_vocabulary(label_set).classes
    for index, nyu40, nyu_class, _, _ in MAPPING_ROWS.values():
        if label_set == "matterport21":
            mapping[index] = OPENSCENE_21.index(nyu40) + 1 if nyu40 in OPENSCENE_21 else 0
        else:
            mapping[index] = classes.index(nyu_class) + 1 if nyu_class in classes else 0
    return mapping


def test_scene_ids_and_region_mesh_round_trip(written):
    scan, table = written
    ds = dataset(scan, table)
    assert ds.scene_ids() == [REGION0, REGION1]
    src = ds.load(REGION0)
    scene = scan.room.scene
    np.testing.assert_array_equal(src.points, scene.points.astype(np.float32))
    np.testing.assert_array_equal(src.faces, scene.faces)
    np.testing.assert_allclose(src.normals, scene.normals, atol=1e-6)
    np.testing.assert_array_equal(src.colors, scene.instance_color[scene.point_instance].astype(np.uint8))
    # instances: segGroup ids through the faces' segments, voted onto vertices like the labels
    expected = openscene_vertex_labels(scene.faces, scan.face_instance + 1, np.arange(12), len(scene.points), 11)
    np.testing.assert_array_equal(src.instances, expected)
    assert (src.instances == scene.point_instance).mean() > 0.97


@pytest.mark.parametrize("label_set", ["matterport21", "matterport40", "matterport80", "matterport160"])
def test_labels_follow_openscenes_mapping_and_vertex_vote(written, label_set):
    scan, table = written
    src = dataset(scan, table, label_set=label_set).load(REGION0)
    classes = get_vocabulary(label_set).classes
    assert src.class_names == classes
    mapping = openscene_mapping(label_set)
    scene = scan.room.scene
    expected = openscene_vertex_labels(scene.faces, scan.face_category, mapping, len(scene.points), len(classes))
    np.testing.assert_array_equal(src.labels, expected)
    named = {scan.raw_category[i]: src.labels[scene.point_instance == i] for i in np.unique(scan.face_instance)}
    assert classes[np.bincount(named["wall"][named["wall"] >= 0]).argmax()] == "wall"
    ceiling = np.bincount(named["ceiling"][named["ceiling"] >= 0]).argmax()
    assert classes[ceiling] == "ceiling"  # matterport21's 21st class; also in the NYU-class sets


def test_real_raw_categories_through_scannets_table():
    table = CategoryTable.read(shared_data("scannet-meta") / "scannetv2-labels.combined.tsv")
    names = ["kitchen cabinets", "office chair", "couch", "nightstand", "trash can", "refrigerator", "ceiling", "xyz"]
    rows = [table.rows.get(n) for n in names]

    def named(label_set):
        classes = get_vocabulary(label_set).classes
        return [classes[i] if i >= 0 else None for i in row_classes(table, rows, label_set)]

    # matterport21 by NYU40 id: nightstand (32) is outside it, a trash can (39) is 'other'
    assert named("matterport21") == ["cabinet", "chair", "sofa", None, "other", "refrigerator", "ceiling", None]
    # the NYU-class sets by name: 'refridgerator' (NYU's spelling) is among the 80, not the 40
    assert named("matterport40") == ["cabinet", "chair", "sofa", "night stand", "garbage bin", None, "ceiling", None]
    assert named("matterport80")[5] == "refridgerator"


def test_scannets_table_labels_a_region_by_its_objects_raw_categories(written):
    """With ScanNet's table the raw label of each face's object is looked up by name; raw names
    both tables share give the labels that Matterport's table gives by category_id."""
    scan, table = written
    real = shared_data("scannet-meta") / "scannetv2-labels.combined.tsv"
    by_id = dataset(scan, table).load(REGION0).labels
    by_name = dataset(scan, real).load(REGION0).labels
    scannet = CategoryTable.read(real)
    shared = [
        i
        for i, raw in enumerate(scan.raw_category)
        if raw in scannet.rows and scannet.lookup([raw], "nyu40id")[0] == MAPPING_ROWS[raw][1]
    ]
    assert {scan.raw_category[i] for i in shared} >= {"wall", "floor", "ceiling"}
    mask = np.isin(scan.room.scene.point_instance, shared)
    assert (by_name[mask] == by_id[mask]).mean() > 0.97


def test_mapping_table_rows_that_map_to_nothing(written):
    _, path = written
    table = CategoryTable.read(path)
    assert table.id_column == "index"
    rows = table.rows_of_ids([9, 11, 40, 90, 12345])  # remove, object, unknown, wardrobe, absent
    assert rows[-1] is None
    assert row_classes(table, rows, "matterport21").tolist() == [-1, -1, -1, 19, -1]  # wardrobe: 'other'
    assert row_classes(table, rows, "matterport40").tolist() == [-1] * 5
    assert row_classes(table, rows, "matterport80").tolist()[3] == get_vocabulary("matterport80").index("wardrobe")


def test_frames_are_the_cameras_inside_the_region_box(written):
    scan, table = written
    src = dataset(scan, table).load(REGION0)
    assert src.frame_names == scan.view_names  # the cameras above the room are left out
    assert dataset(scan, table, frame_stride=2).load(REGION0).frame_names == scan.view_names[::2]
    # region1 has no camera inside: the nearest to its box centre, in file order
    distance = np.linalg.norm(scan.centres - (scan.box_low + scan.box_high) / 2, axis=1)
    nearest = np.sort(np.argsort(distance)[:2])
    names = scan.view_names + scan.outside_names
    assert dataset(scan, table, nearest_views=2).load(REGION1).frame_names == [names[i] for i in nearest]
    with pytest.raises(ValueError, match=rf"scene '{REGION1}'.*no camera of 17DRP5sb8fy.conf inside the region"):
        dataset(scan, table, nearest_views=0).load(REGION1)


def test_frames_poses_depth_and_intrinsics(written):
    scan, _ = written
    src = dataset(scan).load(REGION0)
    assert src.labels is None and src.class_names is None  # no table: no labels
    for i, view in enumerate(scan.room.views):
        frame = src.read_frame(i)
        assert frame.name == scan.view_names[i] and frame.depth_intrinsics is None
        # Matterport's OpenGL pose, turned back into the OpenCV pose it was written from
        np.testing.assert_allclose(frame.cam_to_world, view.color.cam_to_world, atol=1e-8)
        np.testing.assert_allclose(frame.intrinsics, scan.room.color_intrinsics, atol=1e-6)
        raw = np.round(view.depth.depth.astype(np.float64) * 4000)
        raw[:2, :3] = 0
        np.testing.assert_array_equal(frame.depth, (raw / 4000).astype(np.float32))  # 1/4000 m, 0 invalid
        assert frame.depth.dtype == np.float32 and (frame.depth[:2, :3] == 0).all()
        assert np.abs(frame.color.astype(int) - view.color.color).mean() < 4  # JPEG


def test_frames_may_be_stored_smaller(written):
    """``image_height``/``image_width``: colour bilinear with its intrinsics (half-pixel rule),
    depth to the nearest pixel centre (no blend of valid and invalid), the pose unchanged."""
    scan, _ = written
    full = dataset(scan).load(REGION0).read_frame(1)
    half = dataset(scan, image_height=48, image_width=60).load(REGION0).read_frame(1)
    assert half.color.shape == (48, 60, 3) and half.depth.shape == (48, 60)
    np.testing.assert_allclose(half.intrinsics[0, 0], full.intrinsics[0, 0] / 2)
    np.testing.assert_allclose(half.intrinsics[0, 2], (full.intrinsics[0, 2] + 0.5) / 2 - 0.5)
    np.testing.assert_array_equal(half.depth, full.depth[1::2, 1::2])  # nearest centres of 2x2 blocks
    np.testing.assert_array_equal(half.cam_to_world, full.cam_to_world)
    with pytest.raises(ValueError, match="set both image_height and image_width"):
        dataset(scan, image_height=48)


def test_fingerprint_follows_the_kept_frames(written, tmp_path):
    scan = copy_scan(written[0], tmp_path)
    ds = dataset(scan)
    before = ds.fingerprint(REGION0)
    assert dataset(scan).fingerprint(REGION0) == before
    assert dataset(scan, frame_stride=2).fingerprint(REGION0) != before
    outside = scan.scan_dir / "undistorted_depth_images" / (scan.outside_names[0].replace("_i", "_d") + ".png")
    Image.fromarray(np.zeros((96, 120), np.uint16)).save(outside)
    assert ds.fingerprint(REGION0) == before  # not a frame of region0
    kept = scan.scan_dir / "undistorted_depth_images" / (scan.view_names[1].replace("_i", "_d") + ".png")
    Image.fromarray(np.zeros((96, 120), np.uint16)).save(kept)
    assert ds.fingerprint(REGION0) != before


def test_conf_intrinsics_apply_to_the_following_scan_lines(tmp_path):
    pose = " ".join(map(str, np.eye(4).reshape(-1)))
    path = tmp_path / "s.conf"
    path.write_text(
        "dataset matterport\nn_images 3\n\n"
        "intrinsics_matrix 1 0 2 0 3 4 0 0 1\n"
        f"scan a_d0_0.png a_i0_0.jpg {pose}\nscan a_d0_1.png a_i0_1.jpg {pose}\n"
        "intrinsics_matrix 5 0 6 0 7 8 0 0 1\n"
        f"scan a_d1_0.png a_i1_0.jpg {pose}\n"
    )
    images = read_conf("s_region0", path).images
    assert [im.color_name for im in images] == ["a_i0_0.jpg", "a_i0_1.jpg", "a_i1_0.jpg"]
    assert [im.intrinsics[0, 0] for im in images] == [1, 1, 5] and images[2].intrinsics[1, 2] == 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("intrinsics_matrix 1 0 2 0 3 4 0 0\n", "expected intrinsics_matrix and 9 numbers"),
        ("intrinsics_matrix 1 0 2 0 3 4 0 0 1\nscan a.png a.jpg 1 0 0 0\n", "expected 'scan <depth file> <colour"),
        ("intrinsics_matrix 1 0 2 0 3 4 0 0 1\nscan a.png a.jpg" + " x" * 16 + "\n", "expected 16 numbers"),
        ("scan a.png a.jpg" + " 0" * 16 + "\n", "a scan line before any intrinsics_matrix"),
        ("n_images 5\nintrinsics_matrix 1 0 2 0 3 4 0 0 1\nscan a.png a.jpg" + " 0" * 16 + "\n", "n_images 5 but"),
        ("dataset matterport\n", "no 'scan' lines"),
    ],
)
def test_malformed_conf_names_scene_file_and_expectation(tmp_path, text, expected):
    path = tmp_path / "s.conf"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"scene 's_region0'.*s\.conf") as err:
        read_conf("s_region0", path)
    assert expected in str(err.value)


def test_missing_and_malformed_region_files_name_scene_file_and_expectation(written, tmp_path):
    scan = copy_scan(written[0], tmp_path)
    table = written[1]
    regions = scan.scan_dir / "region_segmentations"
    fsegs = json.loads((regions / "region0.fsegs.json").read_text())
    (regions / "region0.fsegs.json").write_text(json.dumps({"segIndices": fsegs["segIndices"][:-1]}))
    with pytest.raises(ValueError, match=rf"scene '{REGION0}'.*region0.fsegs.json 'segIndices'.*expected one per face"):
        dataset(scan).load(REGION0)
    (regions / "region0.fsegs.json").write_text(json.dumps({"segIdx": []}))
    with pytest.raises(ValueError, match=r"region0.fsegs.json has no 'segIndices'"):
        dataset(scan).load(REGION0)
    (regions / "region1.semseg.json").write_text('{"segGroups": [{"id": 0, "segments": [1]}]}')
    with pytest.raises(ValueError, match=rf"scene '{REGION1}'.*segGroups\[0\] needs id, label and segments"):
        dataset(scan).load(REGION1)
    (regions / "region1.semseg.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"scene '{REGION1}': missing .*region1.semseg.json"):
        dataset(scan).load(REGION1)
    # a region PLY without Matterport's face categories, read through Matterport's table
    corners = np.eye(3)
    write_region_ply(regions / "region1.ply", corners, corners, np.zeros((3, 3)), [[0, 1, 2]], [7], [0], [1])
    mesh = regions / "region1.ply"
    mesh.write_bytes(mesh.read_bytes().replace(b"property int category_id", b"property int categoryxid"))
    (regions / "region1.semseg.json").write_text('{"segGroups": []}')
    (regions / "region1.fsegs.json").write_text('{"segIndices": [7]}')
    with pytest.raises(ValueError, match=rf"scene '{REGION1}'.*region1.ply has no face property 'category_id'"):
        dataset(scan, table, nearest_views=1).load(REGION1)
    (scan.scan_dir / "undistorted_camera_parameters" / "17DRP5sb8fy.conf").unlink()
    with pytest.raises(FileNotFoundError, match=rf"scene '{REGION1}': missing .*17DRP5sb8fy.conf \(the scan's camera"):
        dataset(scan).load(REGION1)


def test_depth_of_another_size_is_an_error_naming_the_file(written, tmp_path):
    scan = copy_scan(written[0], tmp_path)
    depth = scan.scan_dir / "undistorted_depth_images" / (scan.view_names[0].replace("_i", "_d") + ".png")
    Image.fromarray(np.zeros((32, 40), np.uint16)).save(depth)
    src = dataset(scan).load(REGION0)
    with pytest.raises(ValueError, match=rf"scene '{REGION0}'.*{depth.name}.*expected Matterport's undistorted depth"):
        src.read_frame(0)
    Image.fromarray(np.zeros(src.read_frame(1).color.shape[:2], np.uint8)).save(depth)  # 8-bit: not 1/4000 m
    with pytest.raises(ValueError, match=rf"scene '{REGION0}'.*{depth.name} is uint8.*single-channel uint16 depth"):
        src.read_frame(0)


def test_input_and_project_pair_vertices_with_pixels_of_their_class(written, tmp_path):
    """Run through the Runner: the mesh vertices project onto colour pixels whose rendered
    object has the vertex's matterport21 class, for nearly all visible vertices (99.7%).

    Vertices on a seam between two objects (wall-floor corners, an object's contact) are
    left out: the vote gives them one of the two, and the pixel may show either (98.9%
    with them)."""
    scan, table = written
    plan = plan_from_dict(
        {
            "store": str(tmp_path / "s.zarr"),
            "dataset": {
                "name": "matterport3d",
                "root": str(scan.root),
                "category_table": str(table),
                "scans": ["17DRP5sb8fy"],
            },
            "stages": {"input": {}, "project": {"cut_bound": 2, "tolerance_kind": "absolute", "depth_tolerance": 0.05}},
        }
    )
    runner = Runner(plan)
    runner.run(fail_fast=True)
    group = runner.store.read(f"scenes/{REGION0}/input")
    images, every = FrameImages(group), range(group.dims["T"])
    assert images.color(every).shape[1:3] == (96, 120) and images.depth(every).shape[1:] == (96, 120)
    labels = group.load("labels")
    project = runner.store.read(f"scenes/{REGION0}/project")
    point, frame, pixel = project.load("point_index"), project.load("frame_index"), project.load("pixel")
    classes = get_vocabulary("matterport21").classes
    rendered_class = np.array(
        [
            classes.index(c) if c in classes else (classes.index("other") if c == "otherfurniture" else -1)
            for c in scan.room.scene.instance_class
        ]
    )
    rendered = rendered_class[np.stack([v.color.instances for v in scan.room.views])[frame, pixel[:, 0], pixel[:, 1]]]
    faces, face_object = scan.room.scene.faces.reshape(-1), np.repeat(scan.face_instance, 3)
    low, high = np.full(len(labels), 99), np.full(len(labels), -1)
    np.minimum.at(low, faces, face_object)
    np.maximum.at(high, faces, face_object)
    check = (labels[point] >= 0) & (low == high)[point]  # labelled, all faces of one object
    assert check.sum() > 5000 and (rendered[check] == labels[point][check]).mean() > 0.995


def test_load_decodes_no_image_and_unknown_scans_or_scenes_are_named(written, tmp_path):
    scan = copy_scan(written[0], tmp_path)
    color = scan.scan_dir / "undistorted_color_images" / f"{scan.view_names[2]}.jpg"
    color.unlink()
    src = dataset(scan).load(REGION0)  # frames stream: nothing decoded yet
    src.read_frame(1)
    with pytest.raises(ValueError, match=rf"cannot read image '.*{color.name}'"):
        src.read_frame(2)
    with pytest.raises(FileNotFoundError, match=r"scans \['nope'\] have no region_segmentations/ folder"):
        dataset(scan, scans=["nope"]).scene_ids()
    with pytest.raises(KeyError, match=r"no scene '17DRP5sb8fy_room0' \(expected <scan>_region<N>"):
        dataset(scan).load("17DRP5sb8fy_room0")


def test_named_splits_are_the_regions_of_the_listed_scans(written, tmp_path):
    scan = written[0]
    (tmp_path / "scenes_val.txt").write_text("17DRP5sb8fy\nzsNo4HB9uLZ\n")  # the second scan is not here
    (tmp_path / "scenes_train.txt").write_text("2t7WUuJeko7\n")
    splits = dataset(scan, splits_dir=str(tmp_path)).named_splits()
    assert splits == {"train": [], "val": [REGION0, REGION1]}
    assert dataset(scan).named_splits() == {}
    with pytest.raises(FileNotFoundError, match="has none of scenes_"):
        dataset(scan, splits_dir=str(tmp_path / "scans")).named_splits()


def test_category_table_needs_an_id_or_index_column(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("raw_category\tnyu40id\tmpcat40index\nwall\t1\t1\n")
    with pytest.raises(ValueError, match=r"t\.tsv: expected .*one of \['id', 'index'\]"):
        CategoryTable.read(path)
    path.write_text("index\traw_category\tnyu40id\tmpcat40index\nx\twall\t1\t1\n")
    with pytest.raises(ValueError, match=r"t\.tsv, line 2: expected an integer index, found 'x'"):
        CategoryTable.read(path)
    real = CategoryTable.read(shared_data("scannet-meta") / "scannetv2-labels.combined.tsv")
    assert real.id_column == "id" and real.rows_of_ids([2])[0]["raw_category"] == "chair"
