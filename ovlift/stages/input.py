"""``input``: a dataset's scene as canonical, validated arrays.

Bad data is rejected with a message naming the scene, the frame and the array,
and nothing is published. Frames with a non-finite or non-rigid pose are kept
but marked (``frames/pose_valid`` false, pose NaN) with a warning, as ScanNet
has them; the scene fails only if no frame has a valid pose. Valid poses are
stored exactly rigid (``kernels.geometry.rigid_poses``), the transform the
``rgbd-folder`` cloud is built with, so projection inverts the same matrix.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from ovlift.cache_schema import IGNORE_LABEL, GroupWriter
from ovlift.cache_schema.groups.frames import (
    color_checksum,
    decode_color,
    encode_color,
    image_file_format,
    resize_color,
)
from ovlift.cache_schema.groups.input import COLOR_BYTES_CHUNK, INPUT_SPEC
from ovlift.config import FrozenConfig, added_field
from ovlift.datasets.base import Frame, SceneSource
from ovlift.errors import StageInputError
from ovlift.kernels.geometry import rigid_poses
from ovlift.progress import progress
from ovlift.stages.base import Stage, StageContext


class InputConfig(FrozenConfig):
    max_median_depth_m: float = Field(100.0, gt=0)
    """A frame whose median valid depth exceeds this is rejected: its depth is
    almost surely in millimetres (or another unit), not metres."""
    color_codec: Literal["auto", "raw", "jpeg"] = added_field("auto")
    """How frames' colour is stored. ``auto``: each frame's image file as the dataset
    published it (JPEG or PNG), which decodes to exactly the reader's pixels, resized as the
    reader resized them; the pixels where the reader has no file (synthetic frames).
    ``raw``: the pixels. ``jpeg``: a published JPEG at the stored size as ``auto``, any
    other frame re-encoded as JPEG at ``jpeg_quality`` (lossy: colours change a little)."""
    jpeg_quality: int = added_field(95, ge=1, le=100)
    """Quality of the frames ``color_codec: jpeg`` re-encodes (95: mean error 1-1.5 grey levels,
    PSNR 41-44 dB, on 3DMatch's PNG frames)."""

    @model_validator(mode="after")
    def _quality_needs_jpeg(self) -> InputConfig:
        if self.jpeg_quality != 95 and self.color_codec != "jpeg":
            raise ValueError("jpeg_quality applies only with color_codec: jpeg")
        return self


class InputStage(Stage[InputConfig]):
    """Reads a scene from the dataset, validates it and writes the canonical arrays."""

    implementation = "canonical"
    version = "2"  # 2: valid poses stored exactly rigid (nearest rotation)
    memory_gb = 4.0  # a ScanNet scene streams in under 1 GB (benchmarks/scannet_ingest.py)
    spec = INPUT_SPEC
    reads_dataset = True

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        assert ctx.dataset is not None
        source = ctx.dataset.load(ctx.scene_id)
        arrays = check_points(source, ctx.where())
        for name, value in arrays.items():
            out.write(name, value)
        self._write_frames(ctx, source, out)
        out.set_info(
            dataset=ctx.dataset.name,
            class_names=list(source.class_names) if source.class_names is not None else None,
            ignore_label=IGNORE_LABEL,
            frame_names=list(source.frame_names),
        )

    def _write_frames(self, ctx: StageContext, source: SceneSource, out: GroupWriter) -> None:
        num = source.num_frames
        if num == 0:
            raise StageInputError(f"{ctx.where()}: no frames")
        first = read_frame(source, 0, ctx.where(source.frame_names[0]))
        frames = _FrameArrays(first, num, out, self.config)
        for i in progress(range(num), f"{ctx.scene_id}: frames", unit="frame"):
            where = ctx.where(source.frame_names[i])
            frame = first if i == 0 else read_frame(source, i, where)
            frames.add(i, frame, source.class_names, self.config, where)
        frames.write(ctx, source.frame_names, out)


class _FrameArrays:
    """A scene's frame arrays, laid out after its first frame: the images go to the group
    as each frame is checked, the cameras and times are kept for ``write``.

    Colour goes to ``frames/color_bytes`` as image files where ``color_codec`` and the first
    frame allow (``_ColorFiles``), else to ``frames/color``; depth to ``frames/depth_raw``
    where the first frame has the sensor's integers, else to ``frames/depth``."""

    def __init__(self, first: Frame, num: int, out: GroupWriter, config: InputConfig) -> None:
        height, width = first.color.shape[:2]
        self.size = (height, width)
        separate_depth = first.depth is not None and first.depth_intrinsics is not None
        self.depth_hw = np.asarray(first.depth).shape if separate_depth else (height, width)
        self.images = {}
        self.color_files = _ColorFiles(num, self.size, config, out) if _stores_files(first, config) else None
        if self.color_files is None:
            self.images["color"] = out.create("frames/color", (num, height, width, 3))
        else:
            out.set_dims(H=height, W=width)
        self.depth_units = first.depth_raw.units_per_m if first.depth_raw is not None else None
        if first.depth is not None:
            name = "frames/depth" if self.depth_units is None else "frames/depth_raw"
            self.images["depth"] = out.create(name, (num, *self.depth_hw))
        for key in ("labels", "instances"):
            if getattr(first, key) is not None:
                self.images[key] = out.create(f"frames/{key}", (num, height, width))
        self.intrinsics = np.zeros((num, 3, 3), np.float32)
        self.poses = np.zeros((num, 4, 4), np.float64)
        self.depth_camera = (
            (np.zeros((num, 3, 3), np.float32), np.zeros((num, 4, 4), np.float64)) if separate_depth else None
        )
        self.timestamps = np.zeros(num, np.float64) if first.timestamp is not None else None

    def add(self, i: int, frame: Frame, class_names: tuple[str, ...] | None, config: InputConfig, where: str) -> None:
        """Check frame ``i`` against the first and store it."""
        checked = check_frame(frame, self.size, self.depth_hw, {*self.images, "color"}, class_names, config, where)
        if self.color_files is not None:
            self.color_files.add(i, frame, checked.pop("color"), where)
        if self.depth_units is not None:
            checked["depth"] = check_raw_depth(frame, checked["depth"], self.depth_units, where)
        for key, value in checked.items():
            self.images[key][i] = value
        if self.depth_camera is not None:
            self.depth_camera[0][i], self.depth_camera[1][i] = check_depth_camera(frame, where)
        elif frame.depth_intrinsics is not None or frame.depth_to_color is not None:
            raise StageInputError(
                f"{where}: array 'frames/depth_intrinsics' present in some frames and missing in others"
            )
        self.intrinsics[i] = frame.intrinsics
        self.poses[i] = frame.cam_to_world
        if (self.timestamps is not None) != (frame.timestamp is not None):
            raise StageInputError(f"{where}: array 'frames/timestamp' present in some frames and missing in others")
        if self.timestamps is not None:
            if not np.isfinite(frame.timestamp):
                raise StageInputError(f"{where}: array 'frames/timestamp' is {frame.timestamp}; expected seconds")
            self.timestamps[i] = frame.timestamp

    def write(self, ctx: StageContext, frame_names: list[str], out: GroupWriter) -> None:
        """The cameras and times; valid poses made exactly rigid, invalid ones marked and warned."""
        rigid, valid = rigid_poses(torch.from_numpy(self.poses))
        valid = valid.numpy()
        if not valid.any():
            raise StageInputError(
                f"{ctx.where()}: array 'frames/cam_to_world': none of the {len(valid)} poses is valid "
                "(expected finite rigid 4x4 camera-to-world matrices)"
            )
        for i in np.flatnonzero(~valid):
            ctx.log.warning(
                "%s: array 'frames/cam_to_world': invalid pose (non-finite or not rigid); frame kept, marked invalid",
                ctx.where(frame_names[i]),
            )
        if self.color_files is not None:
            self.color_files.write()
        if self.depth_units is not None:
            out.set_info(depth_units_per_m=self.depth_units)
        out.write("frames/intrinsics", self.intrinsics)
        if self.depth_camera is not None:
            out.write("frames/depth_intrinsics", self.depth_camera[0])
            out.write("frames/depth_to_color", self.depth_camera[1])
        out.write("frames/cam_to_world", rigid.numpy())
        out.write("frames/pose_valid", valid)
        if self.timestamps is not None:
            out.write("frames/timestamp", self.timestamps)


def _stores_files(first: Frame, config: InputConfig) -> bool:
    """Whether a scene's colour goes to ``frames/color_bytes``: the first frame has a file
    (``auto``), or every frame is to be a JPEG (``jpeg``)."""
    has_file = first.color_file is not None and image_file_format(first.color_file) is not None
    return config.color_codec == "jpeg" or (config.color_codec == "auto" and has_file)


class _ColorFiles:
    """Frames' colour as image files back to back (``frames/color_bytes``), written a chunk
    at a time, with each frame's extent and the checksum of its pixels as read back."""

    def __init__(self, num: int, size: tuple[int, int], config: InputConfig, out: GroupWriter) -> None:
        self.size, self.config, self.out = size, config, out
        self.extent = np.zeros((num, 2), np.int64)
        self.checksum = np.zeros(num, np.uint32)
        self.pending = bytearray()
        self.length = 0

    def add(self, i: int, frame: Frame, color: np.ndarray, where: str) -> None:
        data, pixels = self._encoded(frame, color, where)
        self.extent[i] = (self.length, self.length + len(data))
        self.checksum[i] = color_checksum(pixels)
        self.length += len(data)
        self.pending += data
        self._flush()

    def _flush(self, final: bool = False) -> None:
        """Append the pending bytes in whole chunks (all of them when ``final``): a scene's
        files need not fit in memory."""
        cut = len(self.pending) if final else len(self.pending) // COLOR_BYTES_CHUNK * COLOR_BYTES_CHUNK
        if cut:
            self.out.append("frames/color_bytes", np.frombuffer(bytes(self.pending[:cut]), np.uint8))
            del self.pending[:cut]

    def write(self) -> None:
        self._flush(final=True)
        self.out.write("frames/color_extent", self.extent)
        self.out.write("frames/color_checksum", self.checksum)

    def _encoded(self, frame: Frame, color: np.ndarray, where: str) -> tuple[bytes, np.ndarray]:
        """The file stored for a frame and its pixels as ``FrameImages`` reads them back: the
        reader's file where it decodes to exactly ``color`` (checked), else ``color`` encoded
        (``jpeg``: lossy; a frame without a file among frames with one: PNG, lossless)."""
        data = frame.color_file
        fmt = image_file_format(data) if data is not None else None
        jpeg = self.config.color_codec == "jpeg"
        if data is not None and fmt is not None and (not jpeg or fmt == "JPEG"):
            decoded = decode_color(data, [fmt])
            if not jpeg or decoded.shape[:2] == color.shape[:2]:
                if not np.array_equal(resize_color(decoded, self.size), color):
                    raise StageInputError(
                        f"{where}: array 'frames/color_bytes': the reader's colour is not its image file's "
                        f"decoding{' resized' if decoded.shape[:2] != color.shape[:2] else ''} (a reader bug: "
                        "Frame.color_file must decode to Frame.color)"
                    )
                return data, color
        if jpeg:
            data = encode_color(color, "JPEG", self.config.jpeg_quality)
            return data, decode_color(data, ["JPEG"])
        return encode_color(color, "PNG"), color


def check_raw_depth(frame: Frame, metres: np.ndarray, units_per_m: float, where: str) -> np.ndarray:
    """A frame's depth in the sensor's units, in the first frame's ``units_per_m``, which
    ``depth_metres`` turns into exactly the checked ``metres``."""
    raw = frame.depth_raw
    if raw is None or raw.units_per_m != units_per_m:
        found = "none" if raw is None else f"{raw.units_per_m:g} per metre"
        raise StageInputError(
            f"{where}: array 'frames/depth_raw': the first frame's depth is integers, {units_per_m:g} per metre; "
            f"this frame's raw depth: {found}"
        )
    if raw.values.shape != metres.shape or not np.array_equal(raw.metres(), metres):
        raise StageInputError(
            f"{where}: array 'frames/depth_raw' does not convert to the reader's depth (expected depth = raw / "
            f"{units_per_m:g} exactly; a reader bug: Frame.depth must be Frame.depth_raw.metres())"
        )
    return raw.values


def read_frame(source: SceneSource, index: int, where: str) -> Frame:
    """Frame ``index`` from the reader; its failure (an unreadable file, say) names the frame."""
    try:
        return source.read_frame(index)
    except (OSError, ValueError) as err:
        raise StageInputError(f"{where}: {err}") from None


def check_points(source: SceneSource, where: str) -> dict[str, np.ndarray]:
    """The per-point arrays cast to their canonical dtypes, with the checks of meaning.

    Shapes (N, 3), (N,), (F, 3) and a common N are checked by the writer against
    ``INPUT_SPEC``; here only what a spec cannot say: finite values, colours in
    0-255, labels in the label set, faces indexing existing points.
    """
    points = np.asarray(source.points)
    if len(points) == 0:
        raise StageInputError(f"{where}: array 'points' is empty (expected at least one point)")
    bad = ~np.isfinite(points).reshape(len(points), -1).all(axis=1)
    if bad.any():
        raise StageInputError(
            f"{where}: array 'points' has {int(bad.sum())} non-finite rows (NaN/inf), first at row "
            f"{int(np.flatnonzero(bad)[0])}; expected finite coordinates in metres"
        )
    out = {"points": points.astype(np.float32)}
    if source.colors is not None:
        colors = np.asarray(source.colors)
        if colors.dtype != np.uint8:
            raise StageInputError(f"{where}: array 'colors' expected dtype uint8 (0-255), found {colors.dtype}")
        out["colors"] = colors
    if source.normals is not None:
        normals = np.asarray(source.normals, dtype=np.float32)
        if not np.isfinite(normals).all():
            raise StageInputError(f"{where}: array 'normals' has non-finite values")
        out["normals"] = normals
    if source.labels is not None:
        labels = np.asarray(source.labels)
        out["labels"] = check_labels(labels, source.class_names, labels.shape, "labels", where)
    if source.instances is not None:
        out["instances"] = np.asarray(source.instances).astype(np.int32)
    out.update(check_sweeps(source, len(points), where))
    if source.faces is not None:
        faces = np.asarray(source.faces)  # checked before the cast, which could wrap int64 indices
        n = len(points)
        if faces.size and (faces.min() < 0 or faces.max() >= n):
            raise StageInputError(
                f"{where}: array 'faces' indexes vertex {int(faces.max()) if faces.max() >= n else int(faces.min())}, "
                f"expected indices in [0, {n}) (the scene has {n} points)"
            )
        out["faces"] = faces.astype(np.int32)
    return out


def check_sweeps(source: SceneSource, num_points: int, where: str) -> dict[str, np.ndarray]:
    """LiDAR sweeps: indices >= 0 with key-frame points (0) present, and finite times; the
    two arrays come together (a sweep index without its time cannot order sweeps)."""
    if (source.sweep is None) != (source.timestamp is None):
        raise StageInputError(f"{where}: arrays 'sweep' and 'timestamp' must be given together (or neither)")
    if source.sweep is None or source.timestamp is None:
        return {}
    sweep, time = np.asarray(source.sweep), np.asarray(source.timestamp)
    for name, value in (("sweep", sweep), ("timestamp", time)):
        if value.shape != (num_points,):
            raise StageInputError(f"{where}: array '{name}' expected shape ({num_points},), found {value.shape}")
    if not np.issubdtype(sweep.dtype, np.integer) or sweep.min() < 0 or sweep.max() > np.iinfo(np.int16).max:
        raise StageInputError(
            f"{where}: array 'sweep' expected integer sweep indices >= 0 (0 = key frame), "
            f"found {sweep.dtype} in [{sweep.min()}, {sweep.max()}]"
        )
    if not (sweep == 0).any():
        raise StageInputError(f"{where}: array 'sweep' has no key-frame points (sweep 0)")
    if not np.isfinite(time).all():
        raise StageInputError(f"{where}: array 'timestamp' has non-finite values; expected seconds")
    return {"sweep": sweep.astype(np.int16), "timestamp": time.astype(np.float32)}


def check_labels(
    labels: np.ndarray, class_names: tuple[str, ...] | None, shape: tuple[int, ...], name: str, where: str
) -> np.ndarray:
    if labels.shape != shape:
        raise StageInputError(f"{where}: array '{name}' expected shape {shape}, found {labels.shape}")
    if class_names is None:
        raise StageInputError(f"{where}: array '{name}' given without class_names (the label set it indexes)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise StageInputError(f"{where}: array '{name}' expected integer class indices, found {labels.dtype}")
    outside = (labels != IGNORE_LABEL) & ((labels < 0) | (labels >= len(class_names)))
    if outside.any():
        values = np.unique(labels[outside])[:10].tolist()
        raise StageInputError(
            f"{where}: array '{name}' has {int(outside.sum())} values outside the label set "
            f"(found {values}; expected 0..{len(class_names) - 1} or {IGNORE_LABEL} for ignore)"
        )
    return labels.astype(np.int16)


def check_intrinsics(matrix: np.ndarray, name: str, where: str) -> np.ndarray:
    intrinsics = np.asarray(matrix, dtype=np.float64)
    if (
        intrinsics.shape != (3, 3)
        or not np.isfinite(intrinsics).all()
        or intrinsics[0, 0] <= 0
        or intrinsics[1, 1] <= 0
    ):
        raise StageInputError(
            f"{where}: array '{name}' expected a finite 3x3 matrix with fx, fy > 0, found {intrinsics.tolist()}"
        )
    return intrinsics


def check_depth_camera(frame: Frame, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The depth camera's intrinsics and its rigid transform into the colour camera (identity if
    the reader gives none)."""
    if frame.depth_intrinsics is None:
        raise StageInputError(f"{where}: array 'frames/depth_intrinsics' present in some frames and missing in others")
    intrinsics = check_intrinsics(frame.depth_intrinsics, "frames/depth_intrinsics", where)
    if frame.depth_to_color is None:
        return intrinsics, np.eye(4)
    transform = np.asarray(frame.depth_to_color, dtype=np.float64)
    rigid, valid = rigid_poses(torch.from_numpy(transform[None] if transform.shape == (4, 4) else np.eye(4)[None]))
    if transform.shape != (4, 4) or not bool(valid[0]):
        raise StageInputError(
            f"{where}: array 'frames/depth_to_color' expected a finite rigid 4x4 transform (depth camera -> colour "
            f"camera, metres), found {transform.tolist()}"
        )
    return intrinsics, rigid[0].numpy()


def check_frame(
    frame: Frame,
    size: tuple[int, int],
    depth_size: tuple[int, int],
    arrays: set[str],
    class_names: tuple[str, ...] | None,
    config: InputConfig,
    where: str,
) -> dict[str, np.ndarray]:
    """One frame's images, validated; returns them keyed like ``arrays``."""
    height, width = size
    color = np.asarray(frame.color)
    if color.shape != (height, width, 3) or color.dtype != np.uint8:
        raise StageInputError(
            f"{where}: array 'frames/color' expected ({height}, {width}, 3) uint8 (the size of the first frame), "
            f"found {color.shape} {color.dtype}"
        )
    out = {"color": color}
    if ("depth" in arrays) != (frame.depth is not None):
        raise StageInputError(f"{where}: array 'frames/depth' present in some frames and missing in others")
    if frame.depth is not None:
        out["depth"] = check_depth(frame, size, depth_size, config, where)
    check_intrinsics(frame.intrinsics, "frames/intrinsics", where)
    pose = np.asarray(frame.cam_to_world)
    if pose.shape != (4, 4):
        raise StageInputError(f"{where}: array 'frames/cam_to_world' expected shape (4, 4), found {pose.shape}")
    if "labels" in arrays:
        if frame.labels is None:
            raise StageInputError(f"{where}: array 'frames/labels' present in some frames and missing in others")
        out["labels"] = check_labels(np.asarray(frame.labels), class_names, (height, width), "frames/labels", where)
    if "instances" in arrays:
        if frame.instances is None or np.asarray(frame.instances).shape != (height, width):
            raise StageInputError(f"{where}: array 'frames/instances' expected shape ({height}, {width})")
        out["instances"] = np.asarray(frame.instances).astype(np.int32)
    return out


def check_depth(
    frame: Frame, size: tuple[int, int], depth_size: tuple[int, int], config: InputConfig, where: str
) -> np.ndarray:
    """A frame's depth as float32 metres (non-finite: 0, no measurement), at ``depth_size``
    (the first frame's; ``size`` is the colour image's)."""
    depth = np.asarray(frame.depth, dtype=np.float32)
    if depth.shape != tuple(depth_size):
        if frame.depth_intrinsics is None:
            raise StageInputError(
                f"{where}: array 'frames/depth' is {'x'.join(map(str, depth.shape))} but the colour image is "
                f"{size[0]}x{size[1]}; expected equal sizes, or the depth camera's own intrinsics "
                "(Frame.depth_intrinsics) from the reader"
            )
        raise StageInputError(
            f"{where}: array 'frames/depth' expected {depth_size[0]}x{depth_size[1]} (the size of the first "
            f"frame's depth), found {'x'.join(map(str, depth.shape))}"
        )
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)  # NaN/inf = no measurement
    if (depth < 0).any():
        raise StageInputError(f"{where}: array 'frames/depth' has negative values; expected metres >= 0")
    valid = depth[depth > 0]
    if valid.size and float(np.median(valid)) > config.max_median_depth_m:
        raise StageInputError(
            f"{where}: array 'frames/depth' has median {float(np.median(valid)):.1f} m, expected metres "
            f"(< {config.max_median_depth_m:g}); the depth is probably in millimetres: set the reader's depth_scale"
        )
    return depth
