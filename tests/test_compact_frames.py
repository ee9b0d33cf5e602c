"""Frames stored compact (the published JPEG/PNG, the sensor's uint16 depth) read back as
exactly the reader's pixels and metres; bad bytes or extents fail naming scene, frame and
array; ``color_codec: jpeg`` stays within its stated error."""

import io
from dataclasses import replace

import numpy as np
import pytest
import zarr
from conftest import shared_data, toy_plan_dict
from layout_scene import layout_scene
from PIL import Image
from scannet_layout import write_scene
from sensordata_reference import SensorData

from ovlift.cache_schema import Store
from ovlift.cache_schema.groups.frames import FrameImages
from ovlift.cache_schema.integrity import DamagedGroupError
from ovlift.datasets.base import RawDepth
from ovlift.datasets.rgbd_folder import RGBDFolderConfig, RGBDFolderDataset
from ovlift.datasets.scannet import ScanNetConfig, ScanNetDataset
from ovlift.datasets.toy import ToyDataset
from ovlift.errors import StageInputError
from ovlift.pipeline.plan import Plan, plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.pipeline.verify import verify
from ovlift.stages.input import InputConfig

SCENE = "toy_0000"
COMPACT = ("frames/color_bytes", "frames/color_extent", "frames/color_checksum", "frames/depth_raw")


def jpeg(color: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(color).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


class PublishedToy(ToyDataset):
    """Toy scenes as a sensor publishes them: JPEG colour (the frame's pixels are its
    decoding) and millimetre depth; ``change(i, frame)`` alters frame i afterwards."""

    def __init__(self, config, change=None, raw_depth=True):
        super().__init__(config)
        self.change, self.raw_depth = change, raw_depth

    def load(self, scene_id):
        source = super().load(scene_id)
        read = source.read_frame

        def read_frame(i):
            frame = read(i)
            data = jpeg(frame.color)
            raw = RawDepth(np.round(frame.depth * 1000).astype(np.uint16), 1000.0)
            frame = replace(
                frame,
                color=decoded(data),
                color_file=data,
                depth=raw.metres(),
                depth_raw=raw if self.raw_depth else None,
            )
            return self.change(i, frame) if self.change else frame

        return replace(source, read_frame=read_frame)


def run(tmp_path, dataset=PublishedToy, name="s.zarr", stages=None, **kwargs):
    """The input stage (or ``stages``) on one toy scene read through ``dataset``."""
    base = plan_from_dict({**toy_plan_dict(tmp_path / name, num_scenes=1), "stages": stages or {"input": {}}})
    plan = Plan(base.store, dataset(base.dataset.config, **kwargs), base.vocabulary, "cpu", base.stages)
    runner = Runner(plan)
    runner.run(fail_fast=True)
    return runner, runner.store.read(f"scenes/{SCENE}/input")


def reader_frames(dataset, scene_id):
    source = dataset.load(scene_id)
    return [source.read_frame(i) for i in range(source.num_frames)]


@pytest.mark.realdata
@pytest.mark.parametrize(
    "folder, stride, suffix", [("7scenes-redkitchen", 100, ".color.jpg"), ("3dmatch-lounge", 1, ".color.png")]
)
def test_published_files_and_sensor_depth_are_kept_and_read_back_exactly(tmp_path, folder, stride, suffix):
    root = shared_data(folder)
    dataset = {"name": "rgbd-folder", "paths": [str(root)], "frame_stride": stride, "cloud_frame_stride": 100}
    plan = plan_from_dict({"store": str(tmp_path / "s.zarr"), "dataset": dataset, "stages": {"input": {}}})
    runner = Runner(plan)
    runner.run(fail_fast=True)
    group = runner.store.read(f"scenes/{root.name}/input")
    assert all(name in group for name in COMPACT) and "frames/color" not in group and "frames/depth" not in group
    assert group.info["depth_units_per_m"] == 1000.0
    reader = RGBDFolderDataset(RGBDFolderConfig(paths=(str(root),), frame_stride=stride, cloud_frame_stride=100))
    frames = reader_frames(reader, root.name)
    images, every = FrameImages(group), np.arange(len(frames))
    color, depth = images.color(every), images.depth(every)
    stored, extent = group.load("frames/color_bytes"), group.load("frames/color_extent")
    raw = group.load("frames/depth_raw")
    for i, name in enumerate(group.info["frame_names"]):
        assert stored[slice(*extent[i])].tobytes() == (root / f"{name}{suffix}").read_bytes()  # the file as published
        png = np.array(Image.open(root / f"{name}.depth.png")).astype(np.int64)
        millimetres = np.where(png == 65535, 0, png)  # 7-Scenes' 65535: no reading
        np.testing.assert_array_equal(raw[i], millimetres)
        np.testing.assert_array_equal(color[i], frames[i].color)
        assert depth.dtype == np.float32 and np.array_equal(depth[i], frames[i].depth)  # bit-identical metres
        assert np.array_equal(depth[i], millimetres.astype(np.float32) / np.float32(1000))


def test_scannet_colour_stored_smaller_keeps_the_sens_jpeg_and_reads_back_the_resized_frames(tmp_path):
    """The store keeps each frame's JPEG from the ``.sens`` (checked against ScanNet's own
    reader) and the resize of its decoding equals the reader's 48x64 frames."""
    layout = layout_scene(num_frames=5, depth_offset_m=(0.025, 0.0, 0.0))  # the room of test_scannet.py
    write_scene(tmp_path / "scans", "scene0000_00", layout)
    config = {"paths": [str(tmp_path / "scans")], "frame_stride": 1, "image_height": 48, "image_width": 64}
    plan = plan_from_dict(
        {"store": str(tmp_path / "s.zarr"), "dataset": {"name": "scannet", **config}, "stages": {"input": {}}}
    )
    runner = Runner(plan)
    runner.run(fail_fast=True)
    group = runner.store.read("scenes/scene0000_00/input")
    assert (group.dims["H"], group.dims["W"]) == (48, 64) and all(name in group for name in COMPACT)
    reference = SensorData(str(tmp_path / "scans" / "scene0000_00" / "scene0000_00.sens"))
    frames = reader_frames(ScanNetDataset(ScanNetConfig(**config)), "scene0000_00")
    images, every = FrameImages(group), np.arange(5)
    color, depth = images.color(every), images.depth(every)
    stored, extent, raw = (
        group.load("frames/color_bytes"),
        group.load("frames/color_extent"),
        group.load("frames/depth_raw"),
    )
    for i in every:
        assert stored[slice(*extent[i])].tobytes() == reference.frames[i].color_data
        np.testing.assert_array_equal(raw[i], reference.depth_image(i))
        assert np.array_equal(depth[i], reference.depth_image(i).astype(np.float32) / np.float32(reference.depth_shift))
        assert color[i].shape == (48, 64, 3) and np.array_equal(color[i], frames[i].color)
        assert np.array_equal(depth[i], frames[i].depth)


def test_synthetic_frames_keep_the_pixel_and_metre_arrays(tmp_path):
    _, group = run(tmp_path, dataset=ToyDataset)
    assert "frames/color" in group and "frames/depth" in group and not any(name in group for name in COMPACT)
    frames = reader_frames(ToyDataset(plan_from_dict(toy_plan_dict(tmp_path, num_scenes=1)).dataset.config), SCENE)
    images = FrameImages(group)
    np.testing.assert_array_equal(images.color([1, 3]), [frames[1].color, frames[3].color])
    np.testing.assert_array_equal(images.depth([2]), [frames[2].depth])


def test_jpeg_codec_reencodes_within_its_stated_error_and_is_fingerprinted(tmp_path):
    """Toy frames (synthetic texture and noise, harder than photos) at quality 95: mean error
    under 3 grey levels, PSNR over 34 dB; quality 50 is visibly worse. Depth stays exact."""
    runner, raw = run(tmp_path, dataset=ToyDataset, name="raw.zarr")
    errors = {}
    for quality in (95, 50):
        stages = {"input": {"color_codec": "jpeg", "jpeg_quality": quality}}
        runner_q, group = run(tmp_path, dataset=ToyDataset, name=f"q{quality}.zarr", stages=stages)
        assert "frames/color_bytes" in group and "frames/color" not in group
        assert group.fingerprint != raw.fingerprint
        every = np.arange(group.dims["T"])
        diff = FrameImages(group).color(every).astype(np.float64) - raw.load("frames/color")
        errors[quality] = (np.abs(diff).mean(), 10 * np.log10(255**2 / (diff**2).mean()))
        np.testing.assert_array_equal(FrameImages(group).depth(every), raw.load("frames/depth"))
    assert errors[95][0] < 3 and errors[95][1] > 34, errors
    assert errors[50][1] < errors[95][1] - 3, errors
    assert InputConfig(color_codec="auto").normalised() == InputConfig().normalised()  # the default: no new fingerprint
    with pytest.raises(ValueError, match="jpeg_quality applies only with color_codec: jpeg"):
        InputConfig(jpeg_quality=80)


def test_a_frame_without_a_file_among_frames_with_one_is_stored_as_a_lossless_png(tmp_path):
    def drop_file(i, frame):
        return replace(frame, color_file=None) if i == 2 else frame

    _, group = run(tmp_path, change=drop_file)
    extent = group.load("frames/color_extent")
    assert group.load("frames/color_bytes")[slice(*extent[2])][:4].tobytes() == b"\x89PNG"
    frames = reader_frames(PublishedToy(plan_from_dict(toy_plan_dict(tmp_path, num_scenes=1)).dataset.config), SCENE)
    np.testing.assert_array_equal(FrameImages(group).color(np.arange(4)), [f.color for f in frames])


def test_the_old_layout_and_the_compact_one_read_and_project_the_same(tmp_path):
    """A group written before compact frames (pixels, float metres) and a compact one give
    the same arrays through FrameImages and the same projection."""
    stages = {"input": {"color_codec": "raw"}, "project": {"cut_bound": 2}}
    old_runner, old = run(tmp_path, name="old.zarr", stages=stages, raw_depth=False)
    new_runner, new = run(tmp_path, name="new.zarr", stages={"input": {}, "project": {"cut_bound": 2}})
    assert "frames/color" in old and "frames/depth" in old and all(name in new for name in COMPACT)
    every = np.arange(4)
    np.testing.assert_array_equal(FrameImages(old).color(every), FrameImages(new).color(every))
    np.testing.assert_array_equal(FrameImages(old).depth(every), FrameImages(new).depth(every))
    old_project = old_runner.store.read(f"scenes/{SCENE}/project")
    new_project = new_runner.store.read(f"scenes/{SCENE}/project")
    for name in ("point_index", "frame_index", "pixel", "view_count"):
        np.testing.assert_array_equal(old_project.load(name), new_project.load(name))
    assert len(new_project.load("point_index")) > 1000


def other_frames_file(i, frame):
    return replace(frame, color_file=jpeg(np.ascontiguousarray(frame.color[::-1]))) if i == 2 else frame


def other_units(i, frame):
    return replace(frame, depth_raw=RawDepth(frame.depth_raw.values, 500.0)) if i == 1 else frame


def depth_not_from_raw(i, frame):
    return replace(frame, depth=frame.depth + np.float32(0.001)) if i == 3 else frame


@pytest.mark.parametrize(
    "change, message",
    [
        (other_frames_file, r"frame 'frame-000002': array 'frames/color_bytes': the reader's colour is not its image"),
        (other_units, r"frame 'frame-000001': array 'frames/depth_raw': the first frame's depth is integers, 1000 per"),
        (depth_not_from_raw, r"frame 'frame-000003': array 'frames/depth_raw' does not convert to the reader's depth"),
    ],
)
def test_a_reader_whose_file_or_raw_depth_is_not_its_frame_is_refused(tmp_path, change, message):
    with pytest.raises(StageInputError, match=rf"scene '{SCENE}', " + message):
        run(tmp_path, change=change)
    assert Store(tmp_path / "s.zarr").stage_groups(SCENE) == []


def test_a_damaged_byte_range_or_a_wrong_extent_fails_naming_scene_frame_and_array(tmp_path):
    runner, group = run(tmp_path)
    store = runner.store
    assert verify(store).damage == []
    folder = store.local_root / group.path / group.version
    chunk = folder / "frames" / "color_bytes" / "c" / "0"
    original = chunk.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 1
    chunk.write_bytes(bytes(damaged))
    assert {(d.array, d.chunk) for d in verify(store).damage} == {("frames/color_bytes", "c/0")}
    with pytest.raises(
        DamagedGroupError, match=rf"scene '{SCENE}', frame 'frame-000001': .*array 'frames/color_bytes'"
    ):
        FrameImages(store.read(group.path)).color([1])
    chunk.write_bytes(original)

    extent = zarr.open_array(folder / "frames" / "color_extent", mode="r+")  # written wrong, not damaged
    good = extent[...]
    extent[2] = good[1]  # frame 1's JPEG: decodes, to other pixels
    with pytest.raises(
        StageInputError,
        match=rf"scene '{SCENE}', frame 'frame-000002': array 'frames/color_bytes' \[\d+, \d+\) decodes",
    ):
        FrameImages(store.read(group.path)).color([0, 2])
    extent[2] = (good[2][0] + 7, good[2][1])  # not the start of a file
    with pytest.raises(
        StageInputError, match=r"frame 'frame-000002': array 'frames/color_bytes' .* is not a JPEG or PNG"
    ):
        FrameImages(store.read(group.path)).color([2])
    extent[2] = (good[2][0], 10**9)
    with pytest.raises(StageInputError, match=r"frame 'frame-000002': array 'frames/color_extent' gives bytes"):
        FrameImages(store.read(group.path)).color([2])
