"""Matterport3D regions (dataset ``matterport3d``), read where the download unpacks them.

Layout under ``root`` (``v1/scans`` once the download script's zips are unpacked there)::

    <scan>/region_segmentations/region<N>.ply          binary PLY: vertex x y z nx ny nz tx ty red green blue;
                                                       face vertex_indices material_id segment_id category_id
    <scan>/region_segmentations/region<N>.fsegs.json   {"segIndices": [segment of each face, ...]}
    <scan>/region_segmentations/region<N>.semseg.json  {"segGroups": [{"id", "objectId", "label", "segments"}]}
    <scan>/undistorted_camera_parameters/<scan>.conf   intrinsics_matrix and scan lines (below)
    <scan>/undistorted_color_images/<pano>_i<c>_<y>.jpg
    <scan>/undistorted_depth_images/<pano>_d<c>_<y>.png  uint16, 1/4000 m, 0 = no measurement

A scene is one region, named ``<scan>_region<N>`` as OpenScene names them; its
frames are the scan's images whose camera centre lies strictly inside the region's
vertex bounding box (OpenScene's ``get_matterport_camera_data``).

The ``.conf`` text: ``intrinsics_matrix fx 0 cx 0 fy cy 0 0 1`` applies to the
``scan <depth file> <colour file> <16 numbers>`` lines after it (Matterport writes
one per camera of the tripod, before its six yaw positions); the 16 numbers are the
row-major 4x4 camera-to-world pose in metres. Optional ``depth_directory`` /
``color_directory`` lines name the image folders and ``n_images`` their number.

Matterport's camera axes are OpenGL's (x right, y up, z backward); ovlift's are
OpenCV's, so the pose's y and z columns are negated (as OpenScene's
``preprocess_2d_matterport.py`` does; Matterport's own ``matterport_camera_poses`` are
the same poses with those columns negated). The intrinsics are used as published, with
image rows counted from the top, as OpenScene does; Matterport's notes say the images
"have their origins in the bottom-left", and were ``cy`` counted from the bottom the
rows would be off by ``H - 1 - 2 cy`` (about 5 of 1024 with the published numbers):
unchecked here for want of a real scan. The undistorted colour and depth images share
their size (1280x1024) and intrinsics (OpenScene's fusion projects into both with the
one matrix), so a frame needs no ``depth_intrinsics``; a depth image of another size is
an error. Frames keep the ``.conf`` order and their full size unless
``image_height``/``image_width`` say otherwise (OpenScene resizes to 640x512).

Labels and objects are per face in Matterport; a vertex takes the value most of its
faces carry (OpenScene's vote, with "unlabelled" as one candidate that wins ties).
Objects are the ``segGroups`` of ``.semseg.json`` through the faces' ``segIndices``.
OpenScene's matterport40/80/160 are not Matterport's mpcat40: they are the 40/80/160
most frequent ``nyuClass`` names of ``category_mapping.tsv`` (checked against its rows),
so the ``mpcat40`` columns are not used.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ovlift.cache_schema import IGNORE_LABEL
from ovlift.config import LocalPath
from ovlift.content_hash import file_digests
from ovlift.datasets.base import Dataset, Frame, SceneSource, read_json_key
from ovlift.datasets.category_table import CategoryTable, label_indices
from ovlift.datasets.images import StoredImageSize, raw_depth, read_color_file, read_uint16_image, resized_frame
from ovlift.names import contained
from ovlift.ply import PlyMesh, read_ply
from ovlift.vocabularies import MATTERPORT21, SCANNET20_NYU40_IDS, get_vocabulary

REGIONS = "region_segmentations"
CAMERAS = "undistorted_camera_parameters"
REGION_PLY = re.compile(r"region(\d+)\.ply")

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplied onto a camera-to-world pose: flips the camera's y and z axes."""

MATTERPORT21_NYU40 = (*SCANNET20_NYU40_IDS, 22)
"""NYU40 id of each matterport21 class (OpenScene's ``preprocess_3d_matterport.py``): ScanNet-20's
ids, 39 (otherfurniture) as 'other', then 22 (ceiling)."""


class MatterportConfig(StoredImageSize):
    """``image_height``/``image_width`` store the 1280x1024 frames smaller (OpenScene fuses at
    640x512; a full-size frame is ~9 MB in the store)."""

    root: LocalPath
    """The folder holding one folder per scan (``v1/scans``)."""
    scans: tuple[str, ...] = ()
    """Scans to read (e.g. OpenScene's ``scenes_val.txt``); empty: every scan folder with regions."""
    label_set: Literal["matterport21", "matterport40", "matterport80", "matterport160"] = "matterport21"
    """OpenScene's label sets: matterport21 through the table's ``nyu40id`` (ScanNet-20 + ceiling);
    40/80/160 through its ``nyuClass`` names (the most frequent NYU classes of Matterport)."""
    category_table: LocalPath | None = None
    """Matterport's ``metadata/category_mapping.tsv`` (rows numbered by ``index``, the faces'
    ``category_id``: OpenScene's mapping) or ScanNet's ``scannetv2-labels.combined.tsv`` (looked up
    by each object's raw ``label`` in ``.semseg.json``; raw names ScanNet lacks stay unlabelled).
    None: no labels (they are only for evaluation)."""
    frame_stride: int = Field(1, ge=1)
    """Ingest every k-th of the region's frames (Matterport's views are sparse: 1 keeps all)."""
    depth_scale: float = Field(4000.0, gt=0)
    """Raw depth units per metre (Matterport: 0.25 mm)."""
    splits_dir: LocalPath | None = None
    """Folder with Matterport's ``scenes_{train,val,test}.txt`` (scan ids, one a line; in its
    ``tasks/benchmark`` and OpenScene's ``dataset/matterport``) for ``named_splits``."""
    nearest_views: int = Field(100, ge=0)
    """A region with no camera inside its box takes this many cameras nearest to the box centre.
    OpenScene does so on its test split only and drops such regions from train and val; here it
    applies to every region, because a scene without frames fails ``input`` and a failed scene
    blocks the global stages (those few regions, closets mostly, get views from outside, whose
    points the depth test mostly rejects). 0: no fallback (such a region is an error)."""


@dataclass(frozen=True)
class ConfImage:
    """One ``scan`` line of a ``.conf`` file."""

    depth_name: str
    color_name: str
    intrinsics: np.ndarray
    """(3, 3) pixels, of both images."""
    cam_to_world: np.ndarray
    """(4, 4) in Matterport's (OpenGL) camera axes, as written."""


@dataclass(frozen=True)
class CameraFile:
    images: list[ConfImage]
    depth_directory: str = "undistorted_depth_images"
    color_directory: str = "undistorted_color_images"


class MatterportDataset(Dataset[MatterportConfig]):
    """Matterport3D region meshes with their undistorted RGB-D frames; see the module docstring."""

    name = "matterport3d"

    @cached_property
    def _scans(self) -> dict[str, Path]:
        """Scan id -> folder, found on first use (so a plan validates without its data)."""
        root = Path(self.config.root)
        if not root.is_dir():
            raise FileNotFoundError(f"matterport3d: root '{root}' is not a folder (expected v1/scans)")
        if self.config.scans:
            missing = [s for s in self.config.scans if not (root / s / REGIONS).is_dir()]
            if missing:
                raise FileNotFoundError(f"matterport3d: scans {missing} have no {REGIONS}/ folder under '{root}'")
            return {s: root / s for s in self.config.scans}
        scans = {p.name: p for p in sorted(root.iterdir()) if (p / REGIONS).is_dir()}
        if not scans:
            raise FileNotFoundError(f"matterport3d: no <scan>/{REGIONS}/ folder under '{root}'")
        return scans

    def scene_ids(self) -> list[str]:
        ids = []
        for scan, folder in self._scans.items():
            numbers = sorted(int(m[1]) for p in (folder / REGIONS).iterdir() if (m := REGION_PLY.fullmatch(p.name)))
            ids += [f"{scan}_region{n}" for n in numbers]
        return ids

    def named_splits(self) -> dict[str, list[str]]:
        """The benchmark's splits of scans, as the regions of those scans that are present."""
        if self.config.splits_dir is None:
            return {}
        regions: dict[str, list[str]] = {}
        for scene in self.scene_ids():
            regions.setdefault(scene.rpartition("_region")[0], []).append(scene)
        splits = {}
        for split in ("train", "val", "test"):
            path = Path(self.config.splits_dir) / f"scenes_{split}.txt"
            if path.is_file():
                splits[split] = [r for scan in path.read_text().split() for r in regions.get(scan, [])]
        if not splits:
            raise FileNotFoundError(
                f"matterport3d: splits_dir '{self.config.splits_dir}' has none of scenes_{{train,val,test}}.txt"
            )
        return splits

    def _region(self, scene_id: str) -> tuple[Path, Path]:
        """(scan folder, region path without suffix) of a scene id."""
        scan, sep, number = scene_id.rpartition("_region")
        if not sep or not number.isdigit() or scan not in self._scans:
            raise KeyError(
                f"matterport3d: no scene '{scene_id}' (expected <scan>_region<N>, scans: {list(self._scans)})"
            )
        folder = self._scans[scan]
        return folder, folder / REGIONS / f"region{number}"

    def _files(self, scene_id: str) -> dict[str, Path]:
        folder, region = self._region(scene_id)
        files = {
            "ply": region.with_suffix(".ply"),
            "fsegs": region.with_suffix(".fsegs.json"),
            "semseg": region.with_suffix(".semseg.json"),
            "conf": folder / CAMERAS / f"{folder.name}.conf",
        }
        for key, path in files.items():
            if not path.is_file():
                what = "the scan's camera file" if key == "conf" else "a file of the region"
                raise FileNotFoundError(f"scene '{scene_id}': missing {path} ({what}, in Matterport's layout)")
        return files

    def fingerprint(self, scene_id: str) -> str:
        """Hash of the config, the region's files, the camera file, the table and the kept
        frames' image contents (``ovlift.content_hash`` remembers digests, so this is quick)."""
        digest = hashlib.sha256(self.config.model_dump_json(exclude={"root", "category_table", "splits_dir"}).encode())
        files = self._files(scene_id)
        paths = list(files.values()) + ([Path(self.config.category_table)] if self.config.category_table else [])
        images = [p for _, color, depth in self._frames(scene_id, files)[1] for p in (color, depth)]
        digest.update(scene_id.encode())
        digest.update(";".join(file_digests(paths + images)).encode())
        return digest.hexdigest()

    def _frames(self, scene_id: str, files: dict[str, Path]) -> tuple[PlyMesh, list[tuple[ConfImage, Path, Path]]]:
        """(mesh, [(image, colour path, depth path)]) of the region's kept frames."""
        mesh = _read_mesh(scene_id, files["ply"])
        cameras = read_conf(scene_id, files["conf"])
        centres = np.array([c.cam_to_world[:3, 3] for c in cameras.images]).reshape(-1, 3)
        chosen = cameras_in_box(centres, mesh.points.min(axis=0), mesh.points.max(axis=0), self.config.nearest_views)
        if len(chosen) == 0:
            raise ValueError(
                f"scene '{scene_id}': no camera of {files['conf'].name} inside the region's box "
                f"{mesh.points.min(axis=0).tolist()}..{mesh.points.max(axis=0).tolist()} (nearest_views=0)"
            )
        scan = files["conf"].parent.parent
        where = f"scene '{scene_id}': {files['conf'].name} names the"
        return mesh, [
            (
                cameras.images[i],
                contained(scan, f"{cameras.color_directory}/{cameras.images[i].color_name}", f"{where} image"),
                contained(scan, f"{cameras.depth_directory}/{cameras.images[i].depth_name}", f"{where} image"),
            )
            for i in chosen[:: self.config.frame_stride]
        ]

    def load(self, scene_id: str) -> SceneSource:
        files = self._files(scene_id)
        mesh, frames = self._frames(scene_id, files)
        face_segments, groups = read_segments(scene_id, files["fsegs"], files["semseg"], len(mesh.faces))
        face_object = per_segment(face_segments, {s: int(g["id"]) for g in groups for s in g["segments"]}, -1)
        labels = class_names = None
        if self.config.category_table is not None:
            face_class = self._face_classes(scene_id, files["ply"], mesh, face_segments, groups)
            labels = vertex_vote(mesh.faces, face_class, len(mesh.points)).astype(np.int16)
            class_names = get_vocabulary(self.config.label_set).classes
        depth_scale = np.float32(self.config.depth_scale)

        def read_frame(i: int) -> Frame:
            image, color_path, depth_path = frames[i]
            color, color_file = read_color_file(color_path)
            expected = f"Matterport's single-channel uint16 depth, undistorted ({depth_scale:g} per metre)"
            raw = read_uint16_image(depth_path, scene_id, expected)
            if raw.shape != color.shape[:2]:
                raise ValueError(
                    f"scene '{scene_id}': {depth_path} is {raw.shape} but {color_path.name} is {color.shape[:2]}; "
                    "expected Matterport's undistorted depth at the colour image's size"
                )
            depth, depth_raw = raw_depth(raw, depth_scale)  # 0 stays 0: no measurement
            frame = Frame(
                name=color_path.stem,
                color=color,
                color_file=color_file,
                depth=depth,
                depth_raw=depth_raw,
                intrinsics=image.intrinsics.copy(),
                cam_to_world=image.cam_to_world @ OPENGL_TO_OPENCV,
            )
            return resized_frame(frame, self.config.image_size)

        return SceneSource(
            scene_id=scene_id,
            points=mesh.points,
            colors=mesh.colors,
            normals=mesh.normals,
            labels=labels,
            instances=vertex_vote(mesh.faces, face_object, len(mesh.points)).astype(np.int32),
            faces=mesh.faces,
            class_names=class_names,
            frame_names=[color.stem for _, color, _ in frames],
            read_frame=read_frame,
        )

    def _face_classes(
        self, scene_id: str, ply: Path, mesh: PlyMesh, face_segments: np.ndarray, groups: list[dict]
    ) -> np.ndarray:
        """Class (or ``IGNORE_LABEL``) of each face in the configured label set."""
        table = self._table
        if table.id_column == "index":  # Matterport's table: the faces' category_id numbers its rows
            if "category_id" not in mesh.face_properties:
                raise ValueError(
                    f"scene '{scene_id}': {ply} has no face property 'category_id' "
                    f"(found {list(mesh.face_properties)}); expected Matterport's region PLY"
                )
            keys = mesh.face_properties["category_id"].astype(np.int64)
            unique, inverse = np.unique(keys, return_inverse=True)
            rows = table.rows_of_ids(unique)
        else:  # ScanNet's table: by the raw category of each face's object
            names = sorted({str(g["label"]) for g in groups})
            classes = row_classes(table, [table.rows.get(name) for name in names], self.config.label_set)
            class_of = dict(zip(names, classes.tolist(), strict=True))
            return per_segment(face_segments, {s: class_of[str(g["label"])] for g in groups for s in g["segments"]}, -1)
        return row_classes(table, rows, self.config.label_set)[inverse.reshape(-1)]

    @cached_property
    def _table(self) -> CategoryTable:
        """Read once: every region of every scan maps through it."""
        assert self.config.category_table is not None
        return CategoryTable.read(self.config.category_table)


def per_segment(face_segments: np.ndarray, value_of: dict, missing: int) -> np.ndarray:
    """``value_of[segment]`` for each face (a later segGroup wins a segment listed twice);
    ``missing`` for a segment in no group."""
    unique, inverse = np.unique(face_segments, return_inverse=True)
    values = np.array([value_of.get(int(s), missing) for s in unique], np.int64)
    return values[inverse.reshape(-1)]


def row_classes(table: CategoryTable, rows: list, label_set: str) -> np.ndarray:
    """(len(rows),) class index of each table row in ``label_set``; ``IGNORE_LABEL`` for a
    missing row or a category outside the set. matterport21 goes by ``nyu40id``, the others by
    the ``nyuClass`` name, which reproduces OpenScene's ``preprocess_3d_matterport_K_num_classes``
    (its classes are the first K distinct ``nyuClass`` names of Matterport's table)."""
    if label_set == MATTERPORT21.name:
        ids = np.array([int(t) if t else 0 for t in table.text(rows, "nyu40id")], np.int64)
        return label_indices(ids, MATTERPORT21_NYU40).astype(np.int64)
    classes = get_vocabulary(label_set).classes
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index.get(name, IGNORE_LABEL) for name in table.text(rows, "nyuClass")], np.int64)


def vertex_vote(faces: np.ndarray, face_value: np.ndarray, num_vertices: int) -> np.ndarray:
    """Each vertex takes the value (class or object, -1 none) that most of its faces carry.

    OpenScene counts, per vertex, the faces of each class with "unlabelled" as one more class
    and takes the argmax: a tie goes to "unlabelled" (-1 here), then to the smallest value.
    A vertex in no face is -1.
    """
    if len(faces) == 0:
        return np.full(num_vertices, -1, np.int64)
    values = np.repeat(np.asarray(face_value, np.int64) + 1, 3)  # 0: none
    vertices = np.asarray(faces, np.int64).reshape(-1)
    span = int(values.max()) + 1
    pairs, counts = np.unique(vertices * span + values, return_counts=True)
    vertex, value = pairs // span, pairs % span
    order = np.lexsort((value, -counts, vertex))  # per vertex: most faces first, then smallest value
    first = order[np.r_[True, vertex[order][1:] != vertex[order][:-1]]]
    out = np.full(num_vertices, -1, np.int64)
    out[vertex[first]] = value[first] - 1
    return out


def cameras_in_box(centres: np.ndarray, low: np.ndarray, high: np.ndarray, nearest: int) -> np.ndarray:
    """Indices (in file order) of the camera centres strictly inside the box; if none, of the
    ``nearest`` centres closest to the box centre (OpenScene's fallback for regions such as
    closets that no tripod stood in). A non-finite centre (an invalid pose) is never inside."""
    inside = np.all((centres > low) & (centres < high), axis=1)
    if inside.any() or nearest == 0:
        return np.flatnonzero(inside)
    distance = np.linalg.norm(centres - (low + high) / 2, axis=1)
    return np.sort(np.argsort(distance, kind="stable")[:nearest])


def read_conf(scene_id: str, path: Path) -> CameraFile:
    """The scan lines of a Matterport ``.conf`` file; see the module docstring."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise FileNotFoundError(f"scene '{scene_id}': cannot read the camera file {path}: {err}") from None
    images: list[ConfImage] = []
    intrinsics = None
    folders: dict[str, str] = {}
    expected = None
    for number, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            continue
        where = f"scene '{scene_id}': {path}, line {number}"
        if words[0] == "intrinsics_matrix":
            intrinsics = _numbers(words[1:], 9, where, "intrinsics_matrix and 9 numbers (3x3, row-major)")
            intrinsics = intrinsics.reshape(3, 3)
        elif words[0] == "scan":
            if len(words) != 19:
                raise ValueError(
                    f"{where}: expected 'scan <depth file> <colour file>' and 16 numbers "
                    f"(4x4 camera-to-world), found {len(words) - 1} fields"
                )
            if intrinsics is None:
                raise ValueError(f"{where}: a scan line before any intrinsics_matrix line")
            pose = _numbers(words[3:], 16, where, "16 numbers (4x4 camera-to-world)").reshape(4, 4)
            images.append(ConfImage(words[1], words[2], intrinsics, pose))
        elif words[0] in ("depth_directory", "color_directory") and len(words) == 2:
            folders[words[0]] = words[1]
        elif words[0] == "n_images" and len(words) == 2:
            expected = words[1]
    if expected is not None and expected != str(len(images)):
        raise ValueError(
            f"scene '{scene_id}': {path} says n_images {expected} but has {len(images)} scan lines (truncated?)"
        )
    if not images:
        raise ValueError(f"scene '{scene_id}': {path} has no 'scan' lines (expected Matterport's camera file)")
    return CameraFile(images, **folders)


def _numbers(words: list[str], count: int, where: str, what: str) -> np.ndarray:
    try:
        values = np.array([float(w) for w in words], np.float64)
    except ValueError:
        values = np.zeros(0)
    if len(values) != count or len(words) != count:
        raise ValueError(f"{where}: expected {what}, found {' '.join(words)!r}")
    return values


def read_segments(scene_id: str, fsegs: Path, semseg: Path, num_faces: int) -> tuple[np.ndarray, list[dict]]:
    """(segment of each face, the objects: ``segGroups`` with ``id``, ``label``, ``segments``)."""
    segments = read_json_key(scene_id, fsegs, "segIndices", "a list with one segment id per face")
    if not isinstance(segments, list) or len(segments) != num_faces:
        found = f"{len(segments)} entries" if isinstance(segments, list) else type(segments).__name__
        raise ValueError(
            f"scene '{scene_id}': {fsegs} 'segIndices' has {found}; expected one per face of the region PLY "
            f"({num_faces})"
        )
    groups = read_json_key(scene_id, semseg, "segGroups", "a list of objects with id, label and segments")
    if not isinstance(groups, list):
        raise ValueError(f"scene '{scene_id}': {semseg} 'segGroups' is not a list")
    for g, group in enumerate(groups):
        if not isinstance(group, dict) or not {"id", "label", "segments"} <= set(group):
            found = sorted(group) if isinstance(group, dict) else type(group).__name__
            raise ValueError(f"scene '{scene_id}': {semseg} segGroups[{g}] needs id, label and segments; found {found}")
    return np.asarray(segments, np.int64), groups


def _read_mesh(scene_id: str, path: Path) -> PlyMesh:
    try:
        mesh = read_ply(path)
    except ValueError as err:
        raise ValueError(f"scene '{scene_id}': {err}; expected Matterport's region mesh") from None
    if mesh.faces is None:
        raise ValueError(f"scene '{scene_id}': {path} has no faces; expected Matterport's region mesh (triangles)")
    return mesh
