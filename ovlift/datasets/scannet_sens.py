"""ScanNet's ``<scene>.sens`` RGB-D stream, read lazily.

Layout (ScanNet's ``SensReader/c++/src/sensorData.h``, read by its ``SensorData.py``),
little-endian::

    uint32 version (4)
    uint64 n; n bytes sensor name
    4 x float32[16]   colour intrinsics, colour extrinsics, depth intrinsics, depth extrinsics (row-major 4x4)
    int32 colour compression (-1 unknown, 0 raw, 1 png, 2 jpeg)
    int32 depth compression  (-1 unknown, 0 raw_ushort, 1 zlib_ushort, 2 occi_ushort)
    uint32 colour width, colour height, depth width, depth height
    float32 depth shift (raw depth units per metre, 1000)
    uint64 number of frames, then per frame:
        float32[16] camera-to-world; uint64 colour timestamp, depth timestamp (microseconds);
        uint64 colour bytes c, depth bytes d; c bytes colour; d bytes depth
    (IMU frames may follow; ScanNet's reader ignores them and so does this one)

A scene holds thousands of frames (a few GB), so ``SensFile`` parses the header
once, then indexes every frame by seeking past its blobs (one 96-byte read per
frame) and decodes a frame only when asked. Poses and timestamps are kept from
the index (they are small); images never are.

A damaged or hostile file must not make the reader allocate more than the file
and the header's (bounded) image sizes justify: sizes are checked against sane
maxima and the file's size before anything is read, and zlib depth is inflated
no further than the header's depth size. Every error is a ``SensError``.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SENS_VERSION = 4
COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
SUPPORTED_COLOR = ("raw", "png", "jpeg")
SUPPORTED_DEPTH = ("raw_ushort", "zlib_ushort")  # occi is a proprietary codec; ScanNet never used it
FRAME_HEAD = struct.Struct("<16f4Q")  # pose, timestamps, blob sizes
MAX_NAME_BYTES = 4096  # ScanNet's are a word ("StructureSensor")
MAX_SIDE = 16384
MAX_PIXELS = 1 << 25  # 33.5 Mpixel: a raw colour image of 100 MB (ScanNet's: 1296x968 colour, 640x480 depth)
BLOB_SLACK = 1 << 16
"""A compressed blob may exceed its raw size by a little (PNG, zlib on noise); twice that and this is damage."""


class SensError(ValueError):
    """A ``.sens`` file that is not ScanNet's layout; the message names the file, the byte and the frame."""


@dataclass(frozen=True)
class SensHeader:
    version: int
    sensor_name: str
    intrinsic_color: np.ndarray
    """(4, 4) float32, pixels of the colour image."""
    extrinsic_color: np.ndarray
    """(4, 4) float32; sensorData.h: 'world-to-camera' of the colour camera (identity in released scans)."""
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: str
    depth_compression: str
    color_width: int
    color_height: int
    depth_width: int
    depth_height: int
    depth_shift: float
    """Raw depth units per metre."""
    num_frames: int


@dataclass
class SensFrame:
    camera_to_world: np.ndarray
    """(4, 4) float32 as stored; ScanNet writes -inf for frames its tracker lost."""
    timestamp_color: int
    timestamp_depth: int
    color: np.ndarray
    """(H, W, 3) uint8 RGB at the colour size."""
    depth_raw: np.ndarray
    """(h, w) uint16 at the depth size, ``depth_shift`` units per metre, 0 invalid."""
    color_file: bytes | None = None
    """The JPEG or PNG that ``color`` was decoded from (None for raw colour)."""


class SensFile:
    """An indexed ``.sens`` file; ``frame(i)`` decodes frame i. Errors name the file and where."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with self.path.open("rb") as f:
                self.header = self._read_header(f, size)
                self._index(f, size)
        except OSError as err:
            raise FileNotFoundError(f"cannot read ScanNet sensor stream '{self.path}': {err.strerror}") from None

    def _fail(self, offset: int, what: str) -> SensError:
        return SensError(f"'{self.path}' at byte {offset}: {what} (expected ScanNet's .sens layout, version 4)")

    def _read(self, f, n: int, what: str) -> bytes:
        offset = f.tell()
        data = f.read(n)
        if len(data) != n:
            raise self._fail(offset, f"truncated: {what} needs {n} bytes, {len(data)} left")
        return data

    def _read_header(self, f, size: int) -> SensHeader:
        (version,) = struct.unpack("<I", self._read(f, 4, "version"))
        if version != SENS_VERSION:
            raise self._fail(0, f"version {version}")
        (name_len,) = struct.unpack("<Q", self._read(f, 8, "sensor name length"))
        if name_len > min(size, MAX_NAME_BYTES):
            raise self._fail(4, f"sensor name length {name_len}, expected at most {min(size, MAX_NAME_BYTES)}")
        name = self._read(f, name_len, "sensor name").decode("utf-8", "replace")
        mats = np.frombuffer(self._read(f, 4 * 64, "calibration"), "<f4").reshape(4, 4, 4).copy()
        offset = f.tell()
        color_type, depth_type = struct.unpack("<2i", self._read(f, 8, "compression types"))
        color = COLOR_COMPRESSION.get(color_type, f"code {color_type}")
        depth = DEPTH_COMPRESSION.get(depth_type, f"code {depth_type}")
        if color not in SUPPORTED_COLOR:
            raise self._fail(offset, f"colour compression '{color}' is not supported ({SUPPORTED_COLOR} are)")
        if depth not in SUPPORTED_DEPTH:
            raise self._fail(offset + 4, f"depth compression '{depth}' is not supported ({SUPPORTED_DEPTH} are)")
        cw, ch, dw, dh, shift, num = struct.unpack("<4IfQ", self._read(f, 28, "image sizes and frame count"))
        if not (_sane_size(cw, ch) and _sane_size(dw, dh) and shift > 0 and math.isfinite(shift)):
            raise self._fail(
                offset + 8,
                f"colour {cw}x{ch}, depth {dw}x{dh}, depth shift {shift} (expected sides in [1, {MAX_SIDE}], "
                f"at most {MAX_PIXELS} pixels, a finite shift > 0)",
            )
        return SensHeader(version, name, *mats, color, depth, cw, ch, dw, dh, float(shift), int(num))

    def _index(self, f, size: int) -> None:
        """Byte offset of each frame's colour blob and both sizes; poses and timestamps."""
        n = self.header.num_frames
        if n * FRAME_HEAD.size > size - f.tell():  # bounds the index's arrays by the file's size
            raise self._fail(f.tell() - 8, f"{n} frames cannot fit in the {size - f.tell()} bytes left")
        self.poses = np.empty((n, 4, 4), np.float32)
        self.timestamps = np.empty((n, 2), np.uint64)
        self._blobs = np.empty((n, 3), np.int64)  # colour offset, colour bytes, depth bytes
        for i in range(n):
            start = f.tell()
            head = f.read(FRAME_HEAD.size)
            if len(head) != FRAME_HEAD.size:
                raise self._fail(start, f"truncated: frame {i} of {n} has no header")
            values = FRAME_HEAD.unpack(head)
            color_bytes, depth_bytes = values[18], values[19]
            self._check_blobs(start, i, color_bytes, depth_bytes)
            end = start + FRAME_HEAD.size + color_bytes + depth_bytes
            if end > size:
                raise self._fail(start, f"truncated: frame {i} of {n} needs bytes up to {end}, the file has {size}")
            self.poses[i] = np.asarray(values[:16], np.float32).reshape(4, 4)
            self.timestamps[i] = values[16:18]
            self._blobs[i] = (start + FRAME_HEAD.size, color_bytes, depth_bytes)
            f.seek(end)

    def _check_blobs(self, start: int, i: int, color_bytes: int, depth_bytes: int) -> None:
        """A frame's blobs are at most about their raw size: ``frame`` reads them whole."""
        h = self.header
        for what, found, raw, field in (
            (f"colour (RGB {h.color_width}x{h.color_height})", color_bytes, 3 * h.color_width * h.color_height, 80),
            (f"depth (uint16 {h.depth_width}x{h.depth_height})", depth_bytes, 2 * h.depth_width * h.depth_height, 88),
        ):
            if found > 2 * raw + BLOB_SLACK:
                raise self._fail(
                    start + field,
                    f"frame {i} of {self.num_frames}: {what} blob of {found} bytes, "
                    f"expected at most {2 * raw + BLOB_SLACK} (twice its raw size, and some)",
                )

    @property
    def num_frames(self) -> int:
        return self.header.num_frames

    def frame(self, i: int) -> SensFrame:
        """Frame i, decoded: colour as RGB uint8, depth as raw uint16."""
        offset, color_bytes, depth_bytes = (int(v) for v in self._blobs[i])
        try:
            with self.path.open("rb") as f:
                f.seek(offset)
                color_blob = f.read(color_bytes)
                depth_blob = f.read(depth_bytes)
        except OSError as err:
            raise FileNotFoundError(f"cannot read frame {i} of '{self.path}': {err.strerror}") from None
        if len(color_blob) + len(depth_blob) != color_bytes + depth_bytes:
            raise self._fail(offset, f"truncated: frame {i} (the file shrank since it was indexed)")
        return SensFrame(
            camera_to_world=self.poses[i].copy(),
            timestamp_color=int(self.timestamps[i, 0]),
            timestamp_depth=int(self.timestamps[i, 1]),
            color=self._color(color_blob, i, offset),
            depth_raw=self._depth(depth_blob, i, offset + color_bytes),
            color_file=None if self.header.color_compression == "raw" else color_blob,
        )

    def _color(self, blob: bytes, i: int, offset: int) -> np.ndarray:
        h = self.header
        shape = (h.color_height, h.color_width, 3)
        if h.color_compression == "raw":
            if len(blob) != math.prod(shape):
                raise self._fail(offset, f"frame {i}: raw colour of {len(blob)} bytes, expected {math.prod(shape)}")
            return np.frombuffer(blob, np.uint8).reshape(shape).copy()
        try:  # only the header's format: Pillow opens dozens, each its own parser
            with Image.open(io.BytesIO(blob), formats=[h.color_compression.upper()]) as image:
                size = image.size
                # decoded only at the header's size, which is bounded; the image's own is not
                color = np.array(image.convert("RGB")) if size == (h.color_width, h.color_height) else None
        # Pillow on damaged data: OSError (truncated, unidentified), SyntaxError, ValueError, struct.error, EOFError
        except (OSError, SyntaxError, ValueError, struct.error, EOFError, Image.DecompressionBombError) as err:
            raise self._fail(offset, f"frame {i}: cannot decode its {h.color_compression} colour ({err})") from None
        if color is None:
            raise self._fail(
                offset, f"frame {i}: colour image of {size[0]}x{size[1]}, the header says {shape[1]}x{shape[0]}"
            )
        return color

    def _depth(self, blob: bytes, i: int, offset: int) -> np.ndarray:
        h = self.header
        expected = 2 * h.depth_width * h.depth_height
        if h.depth_compression == "zlib_ushort":
            blob = self._inflate(blob, expected, i, offset)
        if len(blob) != expected:
            raise self._fail(
                offset,
                f"frame {i}: depth of {len(blob)} bytes, expected {expected} (uint16 {h.depth_width}x{h.depth_height})",
            )
        return np.frombuffer(blob, "<u2").reshape(h.depth_height, h.depth_width).copy()

    def _inflate(self, blob: bytes, expected: int, i: int, offset: int) -> bytes:
        """zlib depth, inflated to one byte past ``expected`` at most: a small blob can inflate to gigabytes."""
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(blob, expected + 1)
        except zlib.error as err:
            raise self._fail(offset, f"frame {i}: cannot inflate its zlib depth ({err})") from None
        size = f"{expected} bytes (uint16 {self.header.depth_width}x{self.header.depth_height})"
        if len(data) > expected:
            raise self._fail(offset, f"frame {i}: zlib depth inflates past {size}, the header's depth size")
        if not inflater.eof:  # zlib.decompress, which ScanNet's reader uses, fails here too
            raise self._fail(offset, f"frame {i}: zlib depth stream is truncated ({len(data)} of {size} inflated)")
        return data


def _sane_size(width: int, height: int) -> bool:
    return 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS
