"""Frame files as readers decode them (images, and the text matrices of intrinsics and poses),
and frames stored smaller: one way to do each."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import Field, model_validator

from ovlift.cache_schema.groups.frames import decode_color, depth_metres, image_file_format, resize_color
from ovlift.config import FrozenConfig
from ovlift.datasets.base import Frame, RawDepth
from ovlift.kernels.projection import resize_depth, scale_intrinsics


def read_image(path: Path, mode: str | None = None, expected: str = "an image file") -> np.ndarray:
    """The pixels of an image file; an unreadable or truncated file is a ValueError naming it
    and ``expected`` (what the dataset stores there: "a uint16 PNG in millimetres")."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert(mode) if mode else image)  # decodes now, a writable copy
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image '{path}' (expected {expected}): {err}") from None


def read_uint16_image(path: Path, scene_id: str, expected: str) -> np.ndarray:
    """A single-channel 16-bit image (depth) as uint16 (older Pillow opens those as int32, mode
    "I"); another kind of image is a ValueError naming the scene, the file and ``expected``."""
    raw = read_image(path, expected=expected)
    if raw.dtype == np.int32 and raw.size and 0 <= raw.min() and raw.max() <= np.iinfo(np.uint16).max:
        raw = raw.astype(np.uint16)
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise ValueError(f"scene '{scene_id}': {path} is {raw.dtype} {raw.shape}; expected {expected}")
    return raw


def read_color_file(path: Path, expected: str = "a colour image (JPEG or PNG)") -> tuple[np.ndarray, bytes | None]:
    """A colour image's (H, W, 3) uint8 RGB pixels, decoded from its bytes as the store decodes
    them, and those bytes where the file is a JPEG or PNG (``Frame.color_file``: the store
    keeps them); else None. An unreadable file is a ValueError naming it and ``expected``."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read image '{path}' (expected {expected}): {err}") from None
    try:
        color = decode_color(data)
    except ValueError as err:
        raise ValueError(f"cannot read image '{path}' (expected {expected}): {err}") from None
    return color, data if image_file_format(data) else None


def raw_depth(raw: np.ndarray, units_per_m: float, missing: int | None = None) -> tuple[np.ndarray, RawDepth | None]:
    """A depth image in integer units as (float32 metres, ``RawDepth``): 0 and ``missing`` mean
    no measurement (0 m). The ``RawDepth`` (the store keeps it) is None where the values do not
    fit uint16."""
    if missing is not None:
        raw = np.where(raw == missing, 0, raw)
    fits = raw.dtype == np.uint16 or (
        np.issubdtype(raw.dtype, np.integer) and (raw.size == 0 or (raw.min() >= 0 and raw.max() <= 65535))
    )
    if not fits:
        return depth_metres(raw, units_per_m), None
    stored = RawDepth(raw.astype(np.uint16), float(units_per_m))
    return stored.metres(), stored


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        matrix = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read a {shape[0]}x{shape[1]} matrix ({err})") from None
    if matrix.shape != shape:
        raise ValueError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, found shape {matrix.shape}")
    return matrix


def resized_color(color: np.ndarray, intrinsics: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A colour image resized to ``size`` (rows, cols; bilinear) with its intrinsics scaled by
    the half-pixel rule (``kernels.projection.scale_intrinsics``); unchanged at that size."""
    image_hw = color.shape[:2]
    if tuple(image_hw) == tuple(size):
        return color, intrinsics
    resized = resize_color(color, size)
    return resized, scale_intrinsics(torch.from_numpy(np.asarray(intrinsics)), image_hw, size).numpy()


def resized_frame(frame: Frame, size: tuple[int, int] | None) -> Frame:
    """``frame`` stored at ``size`` (rows, cols): colour bilinear with its intrinsics
    (``resized_color``); labels, instances and registered depth to the nearest pixel centre
    (never blending across an edge or with invalid depth). A depth camera of its own keeps
    its depth as it is. The colour file stays (the store resizes its decoding the same way).
    None: unchanged."""
    if size is None or tuple(frame.color.shape[:2]) == tuple(size):
        return frame
    color, intrinsics = resized_color(frame.color, frame.intrinsics, size)

    def nearest(image: np.ndarray | None) -> np.ndarray | None:
        if image is None:
            return None
        # exact for class and instance ids below 2^24 (float32 mantissa)
        resized = resize_depth(torch.from_numpy(np.asarray(image, np.float32))[None], size)[0].numpy()
        return resized.astype(np.asarray(image).dtype)

    own_camera = frame.depth_intrinsics is not None
    depth_raw = frame.depth_raw
    if depth_raw is not None and not own_camera:
        depth_raw = replace(depth_raw, values=nearest(depth_raw.values))
    return replace(
        frame,
        color=color,
        intrinsics=intrinsics,
        depth=frame.depth if own_camera else nearest(frame.depth),
        depth_raw=depth_raw,
        labels=nearest(frame.labels),
        instances=nearest(frame.instances),
    )


class StoredImageSize(FrozenConfig):
    """Config of readers that can store frames smaller than the sensor's (the store keeps the
    published colour file and resizes its decoding on reading; see ``resized_frame``)."""

    image_height: int | None = Field(None, ge=8)
    """Rows the frames are stored at (None: as published); see ``resized_frame``."""
    image_width: int | None = Field(None, ge=8)
    """Columns the frames are stored at (None: as published)."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> StoredImageSize:
        if (self.image_height is None) != (self.image_width is None):
            raise ValueError("set both image_height and image_width, or neither")
        return self

    @property
    def image_size(self) -> tuple[int, int] | None:
        return None if self.image_height is None else (self.image_height, self.image_width)
