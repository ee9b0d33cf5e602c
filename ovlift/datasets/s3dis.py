"""S3DIS rooms with the Stanford 2D-3D-S images (dataset ``s3dis``), read in place.

S3DIS and 2D-3D-S are one scan of six areas of three buildings, published twice:
as labelled point clouds per room (S3DIS, ``Stanford3dDataset_v1.2``) and as posed
images per area (2D-3D-S). A scene is an S3DIS room; its frames are the 2D-3D-S
images taken in it. Layout expected on disk::

    <s3dis_root>/Area_N/                 Stanford3dDataset_v1.2 (NOT ..._Aligned_Version)
        Area_N_alignmentAngle.txt        "<room> <degrees>" per line (needed for align_rooms)
        <room>/Annotations/<class>_<k>.txt   one object per file, "x y z r g b" per line
    <images_root>/assets/semantic_labels.json   names "class_instance_roomType_roomNum_area"
    <images_root>/area_N/data/           area_5a and area_5b for S3DIS's Area_5
        rgb/camera_<uuid>_<room>_frame_<k>_domain_rgb.png            8-bit RGB
        depth/camera_<uuid>_<room>_frame_<k>_domain_depth.png        uint16, 1/512 m, 65535 = none
        pose/camera_<uuid>_<room>_frame_<k>_domain_pose.json         camera_k_matrix, camera_rt_matrix
        semantic/camera_<uuid>_<room>_frame_<k>_domain_semantic.png  RGB = base-256 index into the labels

Scenes are rooms with an ``Annotations`` folder, ids ``Area_5_office_1``; the room
of an image is the ``<room>`` of its file name (``office_1`` never matches
``office_11``). Area_5's images come from both area_5a and area_5b. Frames are the
room's images sorted by (image area, camera uuid, frame number), every
``frame_stride``-th kept; ``frame_names`` are ``area_5a/camera_<uuid>_office_1_frame_0``.

Decisions, and why:

- **Points** are the room's ``Annotations`` files concatenated in name order (as
  pointnet's ``collect_indoor3d_data``, mmdet3d and Pointcept read S3DIS). The room's
  own ``<room>.txt`` holds the same points again without labels, so it is not read
  (half the I/O, and its own defects: a stray byte in Area_3/hallway_2, the misnamed
  Area_6/copyRoom_1/copy_Room_1.txt). ``labels``: the file's class in ``S3DIS13``
  (``stairs``, in a few rooms, is ``clutter`` as pointnet and Pointcept map it);
  ``instances``: the file's index in that order. No normals, no faces.
- **Frame of reference**: the unaligned release. Its rooms are in the coordinates of
  the 2D-3D-S camera poses (the same scan; Pointcept and others project 2D-3D-S
  images onto it unchanged). The ``_Aligned_Version`` turns each room about a
  centre it does not document (and, by superpoint_transformer's account, lacks the
  angle files), so a root of that name is refused. With
  ``align_rooms`` the reader produces the aligned orientation itself: each room
  and its camera poses are rotated about z by minus the room's alignment angle,
  about the centre of the room's bounding box (Pointcept's ``preprocess_s3dis.py``
  convention), so the images still fit the points.
- **area_5b** is published in its own coordinates (2D-3D-S issue #40): its poses
  are mapped into Area_5's by the fixed transform ``AREA_5B_TO_AREA_5`` (Pointcept's
  calibration; other public 2D-3D-S loaders use the same numbers), unless
  ``correct_area_5b`` is off.
- **Poses**: ``camera_rt_matrix`` is world-to-camera ``[R|t]``, 3x4 (the 2D-3D-S
  README says 4x3; the files hold 3 rows), OpenCV axes; ``cam_to_world`` is its
  inverse. A non-finite matrix gives a NaN pose, which the input stage marks invalid.
  Intrinsics: ``camera_k_matrix`` of each frame (the field of view varies by frame);
  colour and depth share size (1080x1080) and intrinsics, so frames need no
  ``depth_intrinsics``. ``image_height``/``image_width`` store them smaller.
- **Depth**: z-depth (the README: perspective images store plane depth, panoramas
  range), uint16 / 512 = metres; 65535 ("missing") and 0 become 0.
- **Frame labels** (with ``frame_labels``): the semantic PNG decoded as
  ``R*65536 + G*256 + B`` into ``semantic_labels.json``, the name's class mapped as
  the points' are; ``<UNK>`` and out-of-range indices (#0D0D0D marks missing mesh)
  are ignored. Pixel instances are not given: 2D-3D-S numbers objects per area, S3DIS
  per room, and the two numberings do not match.
- **Known defects**: two annotation files hold a stray control byte.
  Area_5/hallway_6/Annotations/ceiling_1.txt line 180389 has a NUL where a space
  belongs ("185\\x00187", as pointnet and mmdet3d fix it), and
  Area_5/office_19/Annotations/ceiling_1.txt line 323474 a 0x10 inside a number
  ("103.0\\x100000", Pointcept's README: "103.000000"). A file that fails to parse
  and holds control bytes is parsed again with NULs read as spaces and other
  control bytes deleted. Any other malformed line is an error naming the room, the
  file and the line. A file named like ``wall_3 (1).txt`` (a duplicate some downloads hold in
  Area_5/office_36) is a copy and is skipped.
- Point files are parsed with ``np.loadtxt``: since numpy 1.23 it is a C parser
  (about 1 M lines/s here, faster than ``np.fromstring``) and names the bad row.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from ovlift.cache_schema import IGNORE_LABEL
from ovlift.config import LocalPath
from ovlift.content_hash import file_digests
from ovlift.datasets.base import Dataset, Frame, RawDepth, SceneSource
from ovlift.datasets.images import (
    StoredImageSize,
    raw_depth,
    read_color_file,
    read_image,
    read_uint16_image,
    resized_frame,
)
from ovlift.vocabularies import S3DIS13

log = logging.getLogger(__name__)
READER_VERSION = "1"
"""Changes whenever the same files are read into different arrays (part of the fingerprint)."""
AREAS = (1, 2, 3, 4, 5, 6)
TRAIN_AREAS = (1, 2, 3, 4, 6)
"""The usual split: train on areas 1-4 and 6, validate and test on Area 5 (OpenScene, Pointcept, ...)."""
IMAGE_AREAS = {5: ("area_5a", "area_5b")}
"""2D-3D-S folders of an S3DIS area other than ``area_N``: 2D-3D-S splits Area 5 in two."""
AREA_5B_TO_AREA_5 = np.array(
    [
        [0.0, 1.0, 0.0, -4.09703582],
        [-1.0, 0.0, 0.0, 6.22617759],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
"""area_5b coordinates -> S3DIS Area_5 coordinates (z up): Pointcept's ``preprocess_s3dis.py``
applies it to area_5b's poses (2D-3D-S issue #40: area_5b's mesh does not line up with 5a's)."""
DEPTH_UNITS_PER_M = 512.0
DEPTH_MISSING = 65535
POINT_COLUMNS = "x y z r g b"
STRAY_BYTES = bytes(b for b in range(1, 32) if chr(b) not in "\t\n\r") + b"\x7f"
"""Control bytes a point file's numbers never hold (the module docstring's known defects)."""
ANNOTATION_NAME = re.compile(r"(?P<cls>[A-Za-z]+)_(?P<k>\d+)(?P<copy> \(\d+\))?\.txt")
IMAGE_NAME = re.compile(r"camera_(?P<uuid>[0-9a-fA-F]+)_(?P<room>[A-Za-z]+_\d+)_frame_(?P<k>\d+)_domain_rgb\.png")
LABEL_NAMES = "assets/semantic_labels.json"
FRAME_FILES = {
    "rgb": ("png", "an 8-bit RGB PNG"),
    "depth": ("png", "a uint16 PNG in 1/512 m, 65535 where there is no reading"),
    "pose": ("json", "2D-3D-S pose JSON with camera_k_matrix and camera_rt_matrix"),
    "semantic": ("png", f"an RGB PNG whose base-256 value indexes {LABEL_NAMES}; or set frame_labels: false"),
}
"""Kind -> (file extension, what the file holds) of a frame's files in ``data/<kind>/``."""
_CLASS_INDEX = {name: i for i, name in enumerate(S3DIS13.classes)}


class S3DISConfig(StoredImageSize):
    """``image_height``/``image_width`` store the 1080x1080 frames smaller (a frame is ~10 MB
    uncompressed at full size)."""

    s3dis_root: LocalPath
    """``Stanford3dDataset_v1.2`` (the unaligned release): the folder holding Area_1 ... Area_6."""
    images_root: LocalPath
    """2D-3D-S (``noXYZ`` suffices): the folder holding area_1 ... area_6, area_5a, area_5b and assets/."""
    areas: tuple[int, ...] = AREAS
    """S3DIS areas whose rooms are scenes."""
    frame_stride: int = Field(1, ge=1)
    """Ingest every k-th image of a room (2D-3D-S has about 260 per room: 70,496 for 272 rooms)."""
    align_rooms: bool = False
    """Rotate each room and its cameras by minus its ``Area_N_alignmentAngle.txt`` angle about
    its bounding-box centre: the orientation of S3DIS's aligned release. Off: the scan's own
    (2D-3D-S) coordinates."""
    correct_area_5b: bool = True
    """Map area_5b's poses into Area_5's coordinates (``AREA_5B_TO_AREA_5``)."""
    frame_labels: bool = True
    """Give each frame its 2D-3D-S semantic image as labels (needs semantic/ and assets/)."""

    @field_validator("areas")
    @classmethod
    def _known_areas(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        unknown = sorted(set(value) - set(AREAS))
        if unknown or not value:
            raise ValueError(f"areas {unknown or '()'}: expected a non-empty subset of {list(AREAS)}")
        return tuple(sorted(set(value)))


class S3DISDataset(Dataset[S3DISConfig]):
    """S3DIS rooms with their 2D-3D-S images; see the module docstring."""

    name = "s3dis"

    @cached_property
    def _rooms(self) -> dict[str, tuple[int, str]]:
        """Scene id -> (area, room), found on first use (so a plan validates without its data)."""
        root = Path(self.config.s3dis_root)
        if root.name.endswith("_Aligned_Version"):
            raise ValueError(
                f"s3dis: '{root}' is the aligned release, whose rooms do not sit in the 2D-3D-S camera "
                "coordinates; expected the unaligned Stanford3dDataset_v1.2 (set align_rooms for the aligned "
                "orientation)"
            )
        rooms = {}
        for area in self.config.areas:
            folder = root / f"Area_{area}"
            if not folder.is_dir():
                raise FileNotFoundError(f"s3dis: no folder '{folder}' (expected Stanford3dDataset_v1.2/Area_{area})")
            for room in sorted(p.parent.name for p in folder.glob("*/Annotations") if p.is_dir()):
                rooms[f"Area_{area}_{room}"] = (area, room)
        if not rooms:
            raise FileNotFoundError(
                f"s3dis: no room with an Annotations folder in '{root}' (areas {list(self.config.areas)})"
            )
        return rooms

    def scene_ids(self) -> list[str]:
        return list(self._rooms)

    def named_splits(self) -> dict[str, list[str]]:
        """``train``: areas 1, 2, 3, 4, 6; ``val`` and ``test``: Area 5 (the usual S3DIS protocol)."""
        train = [s for s, (area, _) in self._rooms.items() if area in TRAIN_AREAS]
        held_out = [s for s, (area, _) in self._rooms.items() if area == 5]
        splits = {"train": train, "val": held_out, "test": held_out}
        return {name: ids for name, ids in splits.items() if ids}

    def _room(self, scene_id: str) -> tuple[int, str]:
        if scene_id not in self._rooms:
            raise KeyError(f"s3dis: no scene '{scene_id}' (expected 'Area_<N>_<room>' of areas {self.config.areas})")
        return self._rooms[scene_id]

    def _annotation_files(self, scene_id: str) -> list[Path]:
        area, room = self._room(scene_id)
        folder = Path(self.config.s3dis_root) / f"Area_{area}" / room / "Annotations"
        files = []
        for path in sorted(folder.glob("*.txt")):
            match = ANNOTATION_NAME.fullmatch(path.name)
            if match is None:
                raise ValueError(
                    f"scene '{scene_id}': annotation file '{path}' is not named '<class>_<k>.txt' "
                    "(expected S3DIS's Annotations/<class>_<k>.txt)"
                )
            if not match["copy"]:
                files.append(path)
        if not files:
            raise FileNotFoundError(f"scene '{scene_id}': no <class>_<k>.txt in '{folder}'")
        return files

    @cached_property
    def _images(self) -> dict[str, dict[str, list[tuple[str, int, str]]]]:
        """2D-3D-S folder -> room -> (uuid, frame number, file stem) of its images; each folder is
        listed on first use (an area holds ~10k images; listing it per room would repeat that)."""
        return {}

    def _image_index(self, image_area: str, scene_id: str) -> dict[str, list[tuple[str, int, str]]]:
        """Room -> images of one 2D-3D-S folder (``area_5a``), listed once."""
        if image_area not in self._images:
            folder = Path(self.config.images_root) / image_area / "data" / "rgb"
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"scene '{scene_id}': no 2D-3D-S image folder '{folder}' (expected <images_root>/{image_area}/"
                    "data/rgb/camera_<uuid>_<room>_frame_<k>_domain_rgb.png)"
                )
            index: dict[str, list[tuple[str, int, str]]] = {}
            for path in folder.glob("*_domain_rgb.png"):
                match = IMAGE_NAME.fullmatch(path.name)
                if match is None:
                    raise ValueError(
                        f"scene '{scene_id}': image '{path}' is not named "
                        "camera_<uuid>_<roomType>_<roomNum>_frame_<k>_domain_rgb.png"
                    )
                stem = path.name.removesuffix("_domain_rgb.png")
                index.setdefault(match["room"], []).append((match["uuid"], int(match["k"]), stem))
            self._images[image_area] = index
        return self._images[image_area]

    def _frames(self, scene_id: str) -> list[tuple[str, str]]:
        """(image area, file stem) of every ingested frame of the room."""
        area, room = self._room(scene_id)
        image_areas = IMAGE_AREAS.get(area, (f"area_{area}",))
        frames = [
            (image_area, stem)
            for image_area in image_areas
            for _, _, stem in sorted(self._image_index(image_area, scene_id).get(room, []))
        ]
        if not frames:
            raise FileNotFoundError(
                f"scene '{scene_id}': no 2D-3D-S image of room '{room}' in {list(image_areas)} (expected "
                f"<images_root>/<area>/data/rgb/camera_<uuid>_{room}_frame_<k>_domain_rgb.png)"
            )
        return frames[:: self.config.frame_stride]

    def _frame_files(self, image_area: str, stem: str, scene_id: str) -> dict[str, Path]:
        """The files of one frame by kind; a missing one is a FileNotFoundError naming the
        scene, the file and what it should hold."""
        data = Path(self.config.images_root) / image_area / "data"
        kinds = ("rgb", "depth", "pose", "semantic") if self.config.frame_labels else ("rgb", "depth", "pose")
        files = {kind: data / kind / f"{stem}_domain_{kind}.{FRAME_FILES[kind][0]}" for kind in kinds}
        for kind, path in files.items():
            if not path.is_file():
                raise FileNotFoundError(
                    f"scene '{scene_id}': frame '{image_area}/{stem}': missing {kind} file '{path}' "
                    f"(expected {FRAME_FILES[kind][1]})"
                )
        return files

    def fingerprint(self, scene_id: str) -> str:
        """Hash of the reader version, the config (not its roots), and the names and contents of
        the room's annotation files and of every ingested frame's files (digests are remembered
        by ``ovlift.content_hash``, so an unchanged room is quick)."""
        cfg = self.config
        digest = hashlib.sha256(READER_VERSION.encode())
        digest.update(cfg.model_dump_json(exclude={"s3dis_root", "images_root"}).encode())
        files = self._annotation_files(scene_id)
        for image_area, stem in self._frames(scene_id):
            files += self._frame_files(image_area, stem, scene_id).values()
        area, _ = self._room(scene_id)
        if cfg.align_rooms:
            files.append(self._angle_file(area))
        if cfg.frame_labels:
            files.append(Path(cfg.images_root) / LABEL_NAMES)
        for path in files:
            digest.update(path.name.encode())
        digest.update(";".join(file_digests(files)).encode())
        return digest.hexdigest()

    def load(self, scene_id: str) -> SceneSource:
        area, room = self._room(scene_id)
        points, colors, labels, instances = read_annotations(self._annotation_files(scene_id), scene_id)
        to_aligned = np.eye(4)
        if self.config.align_rooms:
            angle = read_alignment_angles(self._angle_file(area), scene_id).get(room)
            if angle is None:
                raise ValueError(f"scene '{scene_id}': room '{room}' is not listed in '{self._angle_file(area)}'")
            to_aligned = alignment_transform(angle, (points.max(0) + points.min(0)) / 2)
            points = points @ to_aligned[:3, :3].T + to_aligned[:3, 3]
        frames = self._frames(scene_id)
        label_lut = None
        if self.config.frame_labels:
            label_lut = read_label_names(Path(self.config.images_root) / LABEL_NAMES, scene_id)

        def read_frame(i: int) -> Frame:
            image_area, stem = frames[i]
            files = self._frame_files(image_area, stem, scene_id)
            intrinsics, world_to_cam = read_pose(files["pose"], scene_id)
            cam_to_world = np.linalg.inv(world_to_cam) if np.isfinite(world_to_cam).all() else np.full((4, 4), np.nan)
            if image_area == "area_5b" and self.config.correct_area_5b:
                cam_to_world = AREA_5B_TO_AREA_5 @ cam_to_world
            color, color_file = read_color_file(files["rgb"], FRAME_FILES["rgb"][1])
            depth, depth_raw = read_depth(files["depth"], scene_id)
            frame = Frame(
                name=f"{image_area}/{stem}",
                color=color,
                color_file=color_file,
                depth=depth,
                depth_raw=depth_raw,
                intrinsics=intrinsics,
                cam_to_world=to_aligned @ cam_to_world,
                labels=None if label_lut is None else read_semantic(files["semantic"], label_lut, scene_id),
            )
            return resized_frame(frame, self.config.image_size)

        return SceneSource(
            scene_id=scene_id,
            points=points.astype(np.float32),
            colors=colors,
            labels=labels,
            instances=instances,
            class_names=S3DIS13.classes,
            frame_names=[f"{image_area}/{stem}" for image_area, stem in frames],
            read_frame=read_frame,
        )

    def _angle_file(self, area: int) -> Path:
        return Path(self.config.s3dis_root) / f"Area_{area}" / f"Area_{area}_alignmentAngle.txt"


def read_annotations(files: list[Path], scene_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points (N, 3) float64, colours (N, 3) uint8, S3DIS13 labels (N,) int16 and instances
    (N,) int32 (the file's index) of a room's annotation files, concatenated in order."""
    points, colors, labels, instances = [], [], [], []
    for index, path in enumerate(files):
        values = read_point_file(path, scene_id)
        points.append(values[:, :3])
        colors.append(np.clip(values[:, 3:], 0, 255).round().astype(np.uint8))
        label = class_label(ANNOTATION_NAME.fullmatch(path.name)["cls"])
        labels.append(np.full(len(values), label, np.int16))
        instances.append(np.full(len(values), index, np.int32))
    return np.concatenate(points), np.concatenate(colors), np.concatenate(labels), np.concatenate(instances)


def read_point_file(path: Path, scene_id: str) -> np.ndarray:
    """(N, 6) float64 ``x y z r g b`` of one S3DIS text file (see the module docstring's defect)."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        data = path.read_bytes()
        repaired = data.replace(b"\x00", b" ").translate(None, STRAY_BYTES)
        if repaired == data:
            raise ValueError(
                f"scene '{scene_id}': malformed point file '{path}': {err} (expected '{POINT_COLUMNS}' per line)"
            ) from None
        try:
            values = np.loadtxt(io.BytesIO(repaired), dtype=np.float64, ndmin=2)
            stray = sum(data.count(b) for b in b"\x00" + STRAY_BYTES)
            log.warning(
                "scene '%s': %s: %d stray control byte(s) repaired (a known S3DIS defect)", scene_id, path, stray
            )
        except ValueError as again:
            raise ValueError(
                f"scene '{scene_id}': malformed point file '{path}' (NUL read as space, other control bytes "
                f"deleted): {again} (expected '{POINT_COLUMNS}' per line)"
            ) from None
    except OSError as err:
        raise FileNotFoundError(f"scene '{scene_id}': cannot read point file '{path}': {err}") from None
    if values.size == 0:
        return np.zeros((0, 6))
    if values.shape[1] != 6:
        raise ValueError(
            f"scene '{scene_id}': point file '{path}' has {values.shape[1]} columns; expected 6 ('{POINT_COLUMNS}')"
        )
    return values


def class_label(name: str) -> int:
    """S3DIS13 index of an annotation class; classes outside the 13 (``stairs``) are clutter."""
    return _CLASS_INDEX.get(name, _CLASS_INDEX["clutter"])


def read_alignment_angles(path: Path, scene_id: str) -> dict[str, float]:
    """Room -> alignment angle in degrees from ``Area_N_alignmentAngle.txt`` ('#' lines are comments)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as err:
        raise FileNotFoundError(f"scene '{scene_id}': cannot read alignment angles '{path}': {err.strerror}") from None
    angles = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            room, angle = fields
            angles[room] = float(angle)
        except ValueError:
            raise ValueError(
                f"scene '{scene_id}': alignment angle file '{path}' line {number} is {line!r}; "
                "expected '<room> <degrees>'"
            ) from None
    return angles


def alignment_transform(angle_deg: float, centre: np.ndarray) -> np.ndarray:
    """(4, 4) rotation about z by ``-angle_deg`` about ``centre``: the unaligned room -> aligned."""
    theta = -np.deg2rad(angle_deg)
    c, s = np.cos(theta), np.sin(theta)
    transform = np.eye(4)
    transform[:2, :2] = [[c, -s], [s, c]]
    transform[:3, 3] = centre - transform[:3, :3] @ centre
    return transform


def read_pose(path: Path, scene_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(3, 3) intrinsics and (4, 4) world-to-camera matrix of a 2D-3D-S pose JSON."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"scene '{scene_id}': cannot read pose file '{path}' as JSON: {err}") from None
    matrices = []
    for key, shape in (("camera_k_matrix", (3, 3)), ("camera_rt_matrix", (3, 4))):
        try:
            matrix = np.asarray(payload[key], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            matrix = None
        if matrix is None or matrix.shape != shape:
            found = "missing" if not isinstance(payload, dict) or key not in payload else repr(payload[key])[:80]
            raise ValueError(
                f"scene '{scene_id}': pose file '{path}': expected '{key}' as a {shape[0]}x{shape[1]} list of "
                f"lists, found {found}"
            )
        matrices.append(matrix)
    world_to_cam = np.eye(4)
    world_to_cam[:3] = matrices[1]
    return matrices[0], world_to_cam


def read_depth(path: Path, scene_id: str) -> tuple[np.ndarray, RawDepth | None]:
    """Metres (float32), 0 where 2D-3D-S has no reading (65535), and the raw values."""
    raw = read_uint16_image(
        path, scene_id, f"single-channel uint16 depth, 1/{DEPTH_UNITS_PER_M:.0f} m ({DEPTH_MISSING}: no reading)"
    )
    return raw_depth(raw, DEPTH_UNITS_PER_M, missing=DEPTH_MISSING)


def read_label_names(path: Path, scene_id: str) -> np.ndarray:
    """S3DIS13 label (int16, ignore for ``<UNK>``) of each entry of ``semantic_labels.json``."""
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"scene '{scene_id}': missing '{path}' (2D-3D-S's label names; or set frame_labels: false)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"scene '{scene_id}': cannot read '{path}' as JSON: {err}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"scene '{scene_id}': '{path}': expected a JSON list of names 'class_instance_roomType_roomNum_area'"
        )
    classes = [n.split("_", 1)[0] for n in names]
    return np.array([IGNORE_LABEL if c == "<UNK>" else class_label(c) for c in classes], np.int16)


def read_semantic(path: Path, label_lut: np.ndarray, scene_id: str) -> np.ndarray:
    """(H, W) int16 S3DIS13 labels of a 2D-3D-S semantic image (index = R*65536 + G*256 + B)."""
    rgb = read_image(path, "RGB", FRAME_FILES["semantic"][1]).astype(np.int64)
    index = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    known = index < len(label_lut)  # #0D0D0D (missing mesh) lies past the end
    return np.where(known, label_lut[np.where(known, index, 0)], IGNORE_LABEL).astype(np.int16)
