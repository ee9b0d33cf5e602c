"""A scene's stored frames, decoded: the one reader of the ``input`` group's colour and depth
images, whichever form they were stored in, and the codecs that the readers and the
``input`` stage share with it.

Two forms of each (``INPUT_SPEC``):

* colour: ``frames/color``, the pixels; or ``frames/color_bytes`` + ``frames/color_extent``,
  each frame's image file (JPEG or PNG) back to back, decoded here with Pillow as the
  dataset readers decode them (``decode_color``), then resized to the stored size where the
  file has another (``resize_color``, the resize the readers store smaller frames with). So
  a file kept as the dataset published it decodes to exactly the pixels the reader gave;
  ``frames/color_checksum`` (CRC-32C of those pixels, taken at ingest) makes a decoder that
  gives other pixels (another libjpeg, say) an error instead of a silent change.
* depth: ``frames/depth``, float32 metres; or ``frames/depth_raw``, the sensor's uint16
  units (info ``depth_units_per_m``), converted by ``depth_metres``, the division every
  reader of integer depth makes: bit-identical metres.

Groups written before the compact forms hold the first of each; both read the same.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ovlift.cache_schema.integrity import DamagedGroupError, crc32c
from ovlift.cache_schema.store import StageGroup
from ovlift.errors import StageInputError

IMAGE_FILE_FORMATS = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
"""Leading bytes of the image files the store keeps -> Pillow's format name."""


def image_file_format(data: bytes) -> str | None:
    """``JPEG`` or ``PNG`` by the file's leading bytes; None for any other."""
    return next((fmt for magic, fmt in IMAGE_FILE_FORMATS.items() if data.startswith(magic)), None)


def decode_color(data: bytes, formats: list[str] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file's bytes (Pillow, converted to RGB as every reader
    does); ``formats`` limits the parsers tried. Undecodable bytes are a ValueError."""
    try:
        with Image.open(io.BytesIO(data), formats=formats) as image:
            return np.array(image.convert("RGB"))
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as err:  # Pillow on bad data
        raise ValueError(f"cannot decode the image ({type(err).__name__}: {err})") from None


def resize_color(color: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 resized to ``size`` (rows, cols), Pillow bilinear; unchanged at that size."""
    if tuple(color.shape[:2]) == tuple(size):
        return color
    return np.asarray(Image.fromarray(color).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def encode_color(color: np.ndarray, fmt: str, jpeg_quality: int = 95) -> bytes:
    """An image file of (H, W, 3) uint8 pixels: ``PNG`` (lossless, fast setting) or ``JPEG``."""
    out = io.BytesIO()
    options = {"quality": jpeg_quality} if fmt == "JPEG" else {"compress_level": 1}
    Image.fromarray(color).save(out, format=fmt, **options)
    return out.getvalue()


def color_checksum(color: np.ndarray) -> int:
    """CRC-32C of (H, W, 3) uint8 pixels."""
    return crc32c(np.ascontiguousarray(color).tobytes())


def depth_metres(raw: np.ndarray, units_per_m: float) -> np.ndarray:
    """float32 metres of integer depth in ``units_per_m`` (0 stays 0: no measurement)."""
    return np.asarray(raw).astype(np.float32) / np.float32(units_per_m)


class FrameImages:
    """The colour and depth images of an ``input`` group, decoded; frames are indices into ``T``.

    Errors name the scene, the frame and the array.
    """

    def __init__(self, group: StageGroup) -> None:
        self.group = group
        self.encoded = "frames/color_bytes" in group
        if self.encoded == ("frames/color" in group):
            raise StageInputError(
                f"{self._where()}: expected exactly one of the arrays 'frames/color' and 'frames/color_bytes'"
            )
        if self.encoded:
            self._bytes = group.array("frames/color_bytes")
            self._extent = group.load("frames/color_extent")
            self._checksum = group.load("frames/color_checksum")
        self._depth_units = group.info.get("depth_units_per_m")
        self.depth_array = (
            "frames/depth_raw" if "frames/depth_raw" in group else "frames/depth" if "frames/depth" in group else None
        )
        """The array depth is read from; None: the scene has no depth (LiDAR-camera data)."""

    @property
    def color_hw(self) -> tuple[int, int]:
        return self.group.dims["H"], self.group.dims["W"]

    @property
    def depth_hw(self) -> tuple[int, int] | None:
        """The depth images' size (their own camera's, or the colour's); None without depth."""
        return None if self.depth_array is None else (self.group.dims["H_depth"], self.group.dims["W_depth"])

    def color(self, frames: Sequence[int] | np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB of ``frames``."""
        frames = np.asarray(frames, dtype=np.int64)
        if not self.encoded:
            return np.asarray(self.group.array("frames/color").oindex[frames])
        out = np.empty((len(frames), *self.color_hw, 3), np.uint8)
        for k, i in enumerate(frames):
            out[k] = self._decoded(int(i))
        return out

    def depth(self, frames: Sequence[int] | np.ndarray) -> np.ndarray:
        """(B, h, w) float32 metres of ``frames``, 0 where invalid."""
        if self.depth_array is None:
            raise StageInputError(f"{self._where()}: no depth (neither 'frames/depth' nor 'frames/depth_raw')")
        stored = np.asarray(self.group.array(self.depth_array).oindex[np.asarray(frames, dtype=np.int64)])
        if self.depth_array == "frames/depth":
            return stored
        if not self._depth_units:
            raise StageInputError(
                f"{self._where()}: array 'frames/depth_raw' without info 'depth_units_per_m' (its units per metre)"
            )
        return depth_metres(stored, self._depth_units)

    def _decoded(self, i: int) -> np.ndarray:
        start, stop = (int(v) for v in self._extent[i])
        size = self._bytes.shape[0]
        where = self._where(i)
        if not 0 <= start < stop <= size:
            raise StageInputError(
                f"{where}: array 'frames/color_extent' gives bytes [{start}, {stop}), expected a non-empty "
                f"range inside 'frames/color_bytes' ({size} bytes)"
            )
        try:
            data = np.asarray(self._bytes[start:stop]).tobytes()
        except DamagedGroupError as err:
            raise DamagedGroupError(f"{where}: {err}") from err
        try:
            color = decode_color(data, formats=list(IMAGE_FILE_FORMATS.values()))
        except ValueError as err:
            raise StageInputError(
                f"{where}: array 'frames/color_bytes' [{start}, {stop}) is not a JPEG or PNG file: {err}"
            ) from None
        color = resize_color(color, self.color_hw)
        if color_checksum(color) != int(self._checksum[i]):
            raise StageInputError(
                f"{where}: array 'frames/color_bytes' [{start}, {stop}) decodes to other pixels than were stored "
                "(CRC-32C differs from 'frames/color_checksum'): a wrong 'frames/color_extent', or a decoder "
                "(Pillow, libjpeg) that decodes differently from the one that ingested it; rerun `input` with --force"
            )
        return color

    def _where(self, frame: int | None = None) -> str:
        path = self.group.path.split("/")
        where = f"scene '{path[1]}'" if len(path) > 2 and path[0] == "scenes" else f"group '{self.group.path}'"
        if frame is None:
            return where
        names = self.group.info.get("frame_names") or []
        return where + (f", frame '{names[frame]}'" if frame < len(names) else f", frame {frame}")
