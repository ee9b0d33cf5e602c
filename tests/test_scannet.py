"""The ``scannet`` reader on a toy room written in ScanNet's published layout
(``tests/scannet_layout.py``), against ScanNet's own ``.sens`` reader as the oracle."""

import io
import json
import re
import shutil
import struct
import time
import zlib

import numpy as np
import pytest
from conftest import shared_data
from fuzzing import fuzz, traced
from layout_scene import layout_scene
from PIL import Image
from scannet_layout import (
    EXPECTED,
    INVALID_POSE_FRAME,
    RAW_CATEGORY,
    UNANNOTATED_INSTANCE,
    frame_record,
    sens_header,
    write_exported,
    write_mesh,
    write_scene,
)
from sensordata_reference import SensorData

from ovlift.cache_schema.groups.frames import FrameImages
from ovlift.datasets.scannet import ScanNetConfig, ScanNetDataset
from ovlift.datasets.scannet_sens import SensError, SensFile
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.vocabularies import NYU40, SCANNET20, SCANNET200, SCANNET200_IDS

SCENE = "scene0000_00"
LABEL_SET_COLUMN = {"nyu40": 0, "scannet20": 1, "scannet200": 2}
VOCABULARY = {"nyu40": NYU40, "scannet20": SCANNET20, "scannet200": SCANNET200}


@pytest.fixture(scope="module")
def layout():
    return layout_scene(num_frames=5, depth_offset_m=(0.025, 0.0, 0.0))


@pytest.fixture(scope="module")
def scans(layout, tmp_path_factory):
    """``scans/scene0000_00`` with the .sens, and ``exported/scene0000_00`` as reader.py exports it."""
    root = tmp_path_factory.mktemp("scannet")
    write_scene(root / "scans", SCENE, layout, sens=True, exported=False)
    (root / "exported" / SCENE).mkdir(parents=True)
    write_exported(root / "exported" / SCENE, layout)
    return root


def dataset(scans, **config) -> ScanNetDataset:
    config.setdefault("frame_stride", 1)
    return ScanNetDataset(ScanNetConfig(paths=(str(scans / "scans"),), **config))


def expected_labels(layout, label_set: str) -> np.ndarray:
    vocab = VOCABULARY[label_set]
    names = [EXPECTED[RAW_CATEGORY[c]][LABEL_SET_COLUMN[label_set]] for c in layout.scene.instance_class]
    per_instance = np.array([-1 if n is None else vocab.index(n) for n in names])
    per_instance[UNANNOTATED_INSTANCE] = -1
    return per_instance[layout.scene.point_instance]


def test_sens_reader_agrees_with_scannets_sensordata_py(scans):
    path = scans / "scans" / SCENE / f"{SCENE}.sens"
    ours, reference = SensFile(path), SensorData(str(path))
    h = ours.header
    assert h.sensor_name == reference.sensor_name.decode()
    for name in ("intrinsic_color", "extrinsic_color", "intrinsic_depth", "extrinsic_depth"):
        np.testing.assert_array_equal(getattr(h, name), getattr(reference, name))
    assert (h.color_compression, h.depth_compression) == (reference.color_compression_type, "zlib_ushort")
    assert (h.color_width, h.color_height, h.depth_width, h.depth_height, h.depth_shift) == (
        reference.color_width,
        reference.color_height,
        reference.depth_width,
        reference.depth_height,
        reference.depth_shift,
    )
    assert ours.num_frames == len(reference.frames) == 5
    for i, ref in enumerate(reference.frames):
        frame = ours.frame(i)
        np.testing.assert_array_equal(frame.camera_to_world, ref.camera_to_world)  # -inf stays -inf
        assert (frame.timestamp_color, frame.timestamp_depth) == (ref.timestamp_color, ref.timestamp_depth)
        np.testing.assert_array_equal(frame.color, reference.color_image(i))
        np.testing.assert_array_equal(frame.depth_raw, reference.depth_image(i))
    assert np.isneginf(ours.frame(INVALID_POSE_FRAME).camera_to_world).all()


def test_written_mesh_has_scannets_ply_header(scans, layout):
    raw = (scans / "scans" / SCENE / f"{SCENE}_vh_clean_2.ply").read_bytes()
    header = raw[: raw.index(b"end_header\n")].decode().splitlines()
    n, f = len(layout.scene.points), len(layout.scene.faces)
    assert header == [
        "ply",
        "format binary_little_endian 1.0",
        f"element vertex {n}",
        *(f"property float {a}" for a in "xyz"),
        *(f"property uchar {c}" for c in ("red", "green", "blue", "alpha")),
        f"element face {f}",
        "property list uchar int vertex_indices",
    ]


def test_scene_round_trips_mesh_labels_instances_and_both_cameras(scans, layout):
    data = dataset(scans)
    assert data.scene_ids() == [SCENE]
    source = data.load(SCENE)
    np.testing.assert_array_equal(source.points, layout.scene.points.astype(np.float32))
    np.testing.assert_array_equal(source.faces, layout.scene.faces)
    assert source.colors.dtype == np.uint8 and source.normals is None  # ScanNet's mesh has no normals
    assert source.class_names == SCANNET20.classes
    np.testing.assert_array_equal(source.labels, expected_labels(layout, "scannet20"))
    instances = np.where(layout.scene.point_instance == UNANNOTATED_INSTANCE, -1, layout.scene.point_instance)
    np.testing.assert_array_equal(source.instances, instances)

    assert source.frame_names == ["0", "1", "2", "3", "4"]
    for i, view in enumerate(layout.views):
        frame = source.read_frame(i)
        assert frame.color.shape == view.color.color.shape and frame.depth.shape == view.depth.depth.shape
        assert np.abs(frame.color.astype(int) - view.color.color).mean() < 3  # JPEG
        np.testing.assert_allclose(frame.depth, view.depth.depth, atol=0.5e-3)  # millimetres
        np.testing.assert_allclose(frame.intrinsics, layout.color_intrinsics, rtol=1e-6)
        np.testing.assert_allclose(frame.depth_intrinsics, layout.depth_intrinsics, rtol=1e-6)
        np.testing.assert_allclose(frame.depth_to_color, layout.depth_to_color, atol=1e-6)
        if i == INVALID_POSE_FRAME:
            assert not np.isfinite(frame.cam_to_world).any()
        else:
            np.testing.assert_allclose(frame.cam_to_world, view.color.cam_to_world, atol=1e-5)


def test_colour_may_be_stored_smaller_while_depth_keeps_its_camera(scans, layout):
    full = dataset(scans).load(SCENE).read_frame(1)
    small = dataset(scans, image_height=49, image_width=65).load(SCENE).read_frame(1)
    assert small.color.shape == (49, 65, 3)
    np.testing.assert_array_equal(small.depth, full.depth)  # the depth camera's own image
    np.testing.assert_array_equal(small.depth_intrinsics, full.depth_intrinsics)
    np.testing.assert_allclose(small.intrinsics[0, 0], full.intrinsics[0, 0] * 65 / 130)


def test_frame_stride_keeps_stream_indices_in_both_layouts(scans):
    sens = dataset(scans, frame_stride=2).load(SCENE)
    exported = dataset(scans, frame_stride=2, frames="exported", exported_root=str(scans / "exported")).load(SCENE)
    assert sens.frame_names == exported.frame_names == ["0", "2", "4"]
    for k in range(3):
        a, b = sens.read_frame(k), exported.read_frame(k)
        np.testing.assert_array_equal(a.color, b.color)  # same encoder, same quality
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_allclose(a.cam_to_world, b.cam_to_world, atol=1e-5)  # "%f" text
        np.testing.assert_allclose(a.depth_to_color, b.depth_to_color, atol=1e-5)
        np.testing.assert_allclose(a.depth_intrinsics, b.depth_intrinsics, atol=1e-5)


def test_exported_pose_of_a_lost_frame_stays_invalid(scans):
    data = dataset(scans, frames="exported", exported_root=str(scans / "exported"))
    assert not np.isfinite(data.load(SCENE).read_frame(INVALID_POSE_FRAME).cam_to_world).any()


@pytest.mark.parametrize("label_set", ["nyu40", "scannet200"])
def test_aggregation_maps_raw_categories_to_each_label_set(scans, layout, label_set):
    source = dataset(scans, label_set=label_set).load(SCENE)
    assert source.class_names == VOCABULARY[label_set].classes
    np.testing.assert_array_equal(source.labels, expected_labels(layout, label_set))


def test_real_label_table_maps_scannet_raw_categories(scans, layout):
    table = shared_data("scannet-meta") / "scannetv2-labels.combined.tsv"
    for label_set in ("nyu40", "scannet20", "scannet200"):
        source = dataset(scans, label_set=label_set, label_table=str(table)).load(SCENE)
        np.testing.assert_array_equal(source.labels, expected_labels(layout, label_set))


def test_scannet200_vocabulary_matches_scannets_benchmark_constants():
    rows = (shared_data("scannet-meta") / "scannet200.tsv").read_text().splitlines()[1:]
    ids, labels, splits = zip(*(row.split("\t") for row in rows))
    assert SCANNET200_IDS == tuple(map(int, ids)) and SCANNET200.classes == labels
    by_split = dict(SCANNET200.splits)
    assert {s: len(c) for s, c in by_split.items()} == {"head": 66, "common": 68, "tail": 66}
    assert all(label in by_split[split] for label, split in zip(labels, splits))


def test_labels_ply_gives_nyu40_ids_and_refuses_scannet200(scans, tmp_path, layout):
    folder = tmp_path / SCENE
    folder.mkdir()
    write_mesh(folder, SCENE, layout)
    write_mesh(folder, SCENE, layout, labels_ply=True)
    shutil.copy(scans / "scans" / SCENE / f"{SCENE}.sens", folder)
    for label_set in ("nyu40", "scannet20"):
        source = ScanNetDataset(ScanNetConfig(paths=(str(folder),), label_set=label_set)).load(SCENE)
        np.testing.assert_array_equal(source.labels, expected_labels(layout, label_set))
        assert source.instances is None and source.class_names == VOCABULARY[label_set].classes
    data = ScanNetDataset(ScanNetConfig(paths=(str(folder),), label_set="scannet200"))
    with pytest.raises(ValueError, match=r"scannet200 needs scene0000_00.aggregation.json.*NYU40 ids only"):
        data.load(SCENE)


def copy_scene(scans, tmp_path):
    shutil.copytree(scans / "scans", tmp_path / "scans")
    shutil.copy(scans / "scannetv2-labels.combined.tsv", tmp_path)
    return tmp_path / "scans" / SCENE


def test_errors_name_the_scene_the_file_and_what_was_expected(scans, tmp_path):
    folder = copy_scene(scans, tmp_path)
    data = dataset(tmp_path)
    segs = folder / f"{SCENE}_vh_clean_2.0.010000.segs.json"
    segs.write_text(json.dumps({"sceneId": SCENE, "segIndices": [0, 1]}))
    with pytest.raises(ValueError, match=rf"scene '{SCENE}'.*segs.json has 2 segIndices, expected one per mesh vertex"):
        data.load(SCENE)
    segs.write_text("{not json")
    with pytest.raises(ValueError, match=rf"scene '{SCENE}'.*segs.json is not JSON"):
        data.load(SCENE)
    segs.unlink()
    with pytest.raises(FileNotFoundError, match=rf"scene '{SCENE}'.*aggregation.json needs.*segs.json"):
        data.load(SCENE)
    (folder / f"{SCENE}.aggregation.json").unlink()
    (tmp_path / "scannetv2-labels.combined.tsv").unlink()
    assert data.load(SCENE).labels is None  # no annotations: an unlabelled scene
    (folder / f"{SCENE}.sens").unlink()
    with pytest.raises(FileNotFoundError, match=rf"scene '{SCENE}': no .*{SCENE}.sens and no exported folder"):
        data.load(SCENE)
    (folder / f"{SCENE}_vh_clean_2.ply").unlink()
    with pytest.raises(FileNotFoundError, match=r"no scene in .*scans' .*\(expected <scene>/<scene>_vh_clean_2.ply"):
        dataset(tmp_path).scene_ids()


def test_missing_label_table_is_named(scans, tmp_path):
    copy_scene(scans, tmp_path)
    (tmp_path / "scannetv2-labels.combined.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=rf"scene '{SCENE}': labels need ScanNet's scannetv2-labels"):
        dataset(tmp_path).load(SCENE)


def test_malformed_sens_files_are_named_with_the_byte_and_frame(scans, tmp_path):
    data = (scans / "scans" / SCENE / f"{SCENE}.sens").read_bytes()
    path = tmp_path / "x.sens"
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(ValueError, match=r"x.sens' at byte \d+: truncated: frame 4 of 5"):
        SensFile(path)
    path.write_bytes(struct.pack("<I", 3) + data[4:])
    with pytest.raises(ValueError, match=r"x.sens' at byte 0: version 3 .*version 4"):
        SensFile(path)
    name_len = struct.unpack_from("<Q", data, 4)[0]
    compression = 12 + name_len + 256
    path.write_bytes(data[: compression + 4] + struct.pack("<i", 2) + data[compression + 8 :])
    with pytest.raises(
        ValueError, match=rf"at byte {compression + 4}: depth compression 'occi_ushort' is not supported"
    ):
        SensFile(path)
    path.write_bytes(data[:20])
    with pytest.raises(ValueError, match=r"truncated: sensor name"):
        SensFile(path)


def small_sens(
    color_hw=(24, 32), depth_hw=(12, 16), first_color: bytes | None = None, first_depth: bytes | None = None
) -> bytes:
    """A .sens of two small frames (JPEG colour, zlib depth) packed as ``scannet_layout`` packs
    them; ``first_color`` and ``first_depth`` replace the first frame's blobs."""
    rng = np.random.default_rng(0)
    data = sens_header(np.eye(3), np.eye(3), np.eye(4), 2, color_hw, depth_hw)
    for i in range(2):
        color = rng.integers(0, 256, (*color_hw, 3), dtype=np.uint8)
        record = frame_record(np.eye(4), i, color, rng.uniform(0.5, 4.0, depth_hw), 90)
        if i == 0:  # the frame head ends with both blobs' sizes
            color_bytes = struct.unpack_from("<Q", record, 80)[0]
            color_blob = first_color or record[96 : 96 + color_bytes]
            depth_blob = first_depth or record[96 + color_bytes :]
            record = record[:80] + struct.pack("<QQ", len(color_blob), len(depth_blob)) + color_blob + depth_blob
        data += record
    return data


def test_a_zlib_depth_bomb_is_refused_naming_the_frame_without_inflating_it(tmp_path):
    deflate = zlib.compressobj(1)
    bomb = b"".join(deflate.compress(bytes(1 << 20)) for _ in range(64)) + deflate.flush()
    assert len(bomb) < 400_000  # 64 MiB of zeros; the header's 640x480 depth is 600 KB
    path = tmp_path / "bomb.sens"
    path.write_bytes(small_sens(depth_hw=(480, 640), first_depth=bomb))
    sens = SensFile(path)
    start = time.perf_counter()
    peak, error = traced(lambda: sens.frame(0), SensError)
    assert time.perf_counter() - start < 1.0
    assert peak < 8 << 20, f"reading the bomb allocated {peak >> 20} MiB"
    assert re.search(r"bomb.sens' at byte \d+: frame 0: zlib depth inflates past 614400 bytes", str(error)), error
    assert sens.frame(1).depth_raw.shape == (480, 640)  # the other frames still read


def test_a_colour_image_larger_than_the_header_says_is_refused_before_decoding(tmp_path):
    large = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(large, format="JPEG")  # 190 KB; decoded, 36 MB
    path = tmp_path / "large.sens"
    path.write_bytes(small_sens(color_hw=(480, 640), first_color=large.getvalue()))
    sens = SensFile(path)
    peak, error = traced(lambda: sens.frame(0), SensError)
    assert peak < 8 << 20, f"reading the image allocated {peak >> 20} MiB"
    expected = r"large.sens' at byte \d+: frame 0: colour image of 4000x3000, the header says 640x480"
    assert re.search(expected, str(error)), error


def read_every_frame(path) -> None:
    sens = SensFile(path)
    for i in range(sens.num_frames):
        sens.frame(i)


def test_damaged_sens_files_read_or_fail_with_a_sens_error_quickly_and_small(tmp_path):
    data = small_sens()
    name_len = struct.unpack_from("<Q", data, 4)[0]
    sizes_end = 12 + name_len + 256 + 36 + 96 + 200  # the header, the first frame's head, its JPEG's size (SOF)
    path = tmp_path / "fuzz.sens"
    outcomes = fuzz(path, data, sizes_end, lambda: read_every_frame(path), SensError, np.random.default_rng(0))
    assert outcomes["read"] > 10 and outcomes["SensError"] > 100, outcomes


def test_named_splits_come_from_scannets_split_files(scans, tmp_path):
    (tmp_path / "scannetv2_train.txt").write_text(f"{SCENE}\nscene0001_00\n")
    (tmp_path / "scannetv2_val.txt").write_text("scene0011_00\n")
    splits = dataset(scans, splits_dir=str(tmp_path)).named_splits()
    assert splits == {"train": [SCENE], "val": []}


def test_fingerprint_follows_the_stream_and_the_config(scans, tmp_path):
    folder = copy_scene(scans, tmp_path)
    data = dataset(tmp_path)
    first = data.fingerprint(SCENE)
    assert dataset(tmp_path, frame_stride=2).fingerprint(SCENE) != first
    sens = folder / f"{SCENE}.sens"
    raw = bytearray(sens.read_bytes())
    raw[-1] ^= 1
    sens.write_bytes(bytes(raw))
    assert dataset(tmp_path).fingerprint(SCENE) != first


def test_input_and_project_through_the_runner_put_mesh_vertices_on_pixels_of_their_label(scans, layout, tmp_path):
    """The scene as ScanNet stores it (JPEG colour, millimetre depth from a camera 2.5 cm
    beside the colour camera, one lost pose) ingests, and projecting the mesh into its own
    colour frames lands nearly every visible vertex on a rendered pixel of its own label."""
    plan = plan_from_dict(
        {
            "store": str(tmp_path / "s.zarr"),
            "dataset": {"name": "scannet", "paths": [str(scans / "scans")], "frame_stride": 1},
            "stages": {
                "input": {},
                "project": {"cut_bound": 2, "tolerance_kind": "absolute", "depth_tolerance": 0.05},
            },
        }
    )
    runner = Runner(plan)
    assert runner.run(fail_fast=True).counts()["ran"] == 2
    scene = runner.store.read(f"scenes/{SCENE}/input")
    images, every = FrameImages(scene), range(scene.dims["T"])
    assert images.color(every).shape == (5, 97, 130, 3) and images.depth(every).shape == (5, 48, 64)
    assert scene.load("frames/pose_valid").tolist() == [i != INVALID_POSE_FRAME for i in range(5)]
    np.testing.assert_allclose(scene.load("frames/depth_to_color")[0], layout.depth_to_color, atol=1e-6)
    group = runner.store.read(f"scenes/{SCENE}/project")
    point, frame, pixel = group.load("point_index"), group.load("frame_index"), group.load("pixel")
    assert INVALID_POSE_FRAME not in set(frame.tolist()) and len(point) > 5000
    rendered = np.stack([v.color.labels for v in layout.views])[frame, pixel[:, 0], pixel[:, 1]]
    labels = scene.load("labels")[point]
    annotated = labels != -1  # the unannotated wall and the ceiling are ignored in ScanNet-20
    agree = (rendered[annotated] == labels[annotated]).mean()
    print(f"scannet: {len(point)} correspondences, {annotated.mean():.1%} annotated, {agree:.2%} on their label")
    assert annotated.mean() > 0.5 and agree > 0.97


def test_exported_layout_without_colour_intrinsics_is_named(scans, tmp_path):
    shutil.copytree(scans / "exported", tmp_path / "exported")
    (tmp_path / "exported" / SCENE / "intrinsic" / "intrinsic_color.txt").unlink()
    data = dataset(scans, frames="exported", exported_root=str(tmp_path / "exported"))
    with pytest.raises(
        FileNotFoundError, match=rf"scene '{SCENE}': no .*intrinsic_color.txt \(expected reader.py's 4x4"
    ):
        data.load(SCENE)
