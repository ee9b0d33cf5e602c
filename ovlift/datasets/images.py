"""Frame files as readers decode them (images, and the text matrices of intrinsics and poses),
and frames stored smaller: one way to do each."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import Field, model_validator

from ovlift.config import FrozenConfig
from ovlift.datasets.base import Frame
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


def read_color(path: Path, expected: str = "a colour image (JPEG or PNG)") -> np.ndarray:
    return read_image(path, "RGB", expected).astype(np.uint8)


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
    resized = np.asarray(Image.fromarray(color).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return resized, scale_intrinsics(torch.from_numpy(np.asarray(intrinsics)), image_hw, size).numpy()


def resized_frame(frame: Frame, size: tuple[int, int] | None) -> Frame:
    """``frame`` stored at ``size`` (rows, cols): colour bilinear with its intrinsics
    (``resized_color``); labels, instances and registered depth to the nearest pixel centre
    (never blending across an edge or with invalid depth). A depth camera of its own keeps
    its depth as it is. None: unchanged."""
    if size is None or tuple(frame.color.shape[:2]) == tuple(size):
        return frame
    color, intrinsics = resized_color(frame.color, frame.intrinsics, size)

    def nearest(image: np.ndarray | None) -> np.ndarray | None:
        if image is None:
            return None
        # exact for class and instance ids below 2^24 (float32 mantissa)
        resized = resize_depth(torch.from_numpy(np.asarray(image, np.float32))[None], size)[0].numpy()
        return resized.astype(np.asarray(image).dtype)

    depth = frame.depth if frame.depth_intrinsics is not None else nearest(frame.depth)
    return replace(
        frame,
        color=color,
        intrinsics=intrinsics,
        depth=depth,
        labels=nearest(frame.labels),
        instances=nearest(frame.instances),
    )


class StoredImageSize(FrozenConfig):
    """Config of readers that can store frames smaller than the sensor's (a store of full-size
    frames can be larger than the dataset: colour is stored decoded)."""

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
