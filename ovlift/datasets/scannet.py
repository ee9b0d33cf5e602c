"""ScanNet v2 scenes (dataset ``scannet``), read where ScanNet's download script puts them.

One scene folder, ``scans/<scene>/``::

    <scene>.sens                              RGB-D stream (``ovlift.datasets.scannet_sens``)
    <scene>_vh_clean_2.ply                    mesh: vertices x y z, red green blue (alpha), faces
    <scene>.aggregation.json                  objects: segGroups [{objectId, label, segments}]
    <scene>_vh_clean_2.0.010000.segs.json     segIndices: over-segment of each vertex
    <scene>_vh_clean_2.labels.ply             (instead of the two above) vertex ``label`` = NYU40 id

or, instead of the ``.sens``, the folders ScanNet's ``SensReader/python/reader.py``
exports (in the scene folder, or in ``exported_root/<scene>/``)::

    color/<i>.jpg  depth/<i>.png (uint16, ``depth_scale`` per metre)  pose/<i>.txt (4x4)
    intrinsic/intrinsic_color.txt  intrinsic/intrinsic_depth.txt  (4x4)
    intrinsic/extrinsic_color.txt  intrinsic/extrinsic_depth.txt  (4x4, identity when absent)

Raw categories map to a label set through ``scannetv2-labels.combined.tsv``, which
ScanNet ships at the top of the dataset (beside ``scans/``): NYU40 and ScanNet-20
through its ``nyu40id`` column, ScanNet-200 through its ``id`` column.

Decisions:

- Frame stride (default 20, as OpenScene and SAS sample ScanNet) keeps frames whose
  index in the stream is a multiple of it, in both layouts, so a folder exported
  with ``frame_skip`` 20 and the ``.sens`` give the same frames, named by that index.
- Cameras: ScanNet's frame pose is that of its sensor rig; ``sensorData.h`` calls each
  camera's extrinsic 'world-to-camera', read here as rig -> camera. So the colour pose is
  ``pose @ inv(extrinsic_color)`` and depth -> colour is ``extrinsic_color @
  inv(extrinsic_depth)``. Both are identity in released scans (the colour intrinsics were
  calibrated against the depth camera's pose), so poses pass through unchanged, -inf included.
- Instances are the aggregation's ``objectId`` (-1: no object). ``_vh_clean_2.labels.ply``
  carries NYU40 ids only, so ScanNet-200 needs the aggregation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ovlift.config import LocalPath
from ovlift.content_hash import file_digests
from ovlift.datasets.base import Dataset, Frame, RawDepth, SceneSource, read_json_key, scene_folders
from ovlift.datasets.category_table import CategoryTable, label_indices
from ovlift.datasets.images import StoredImageSize, raw_depth, read_color_file, read_image, read_matrix, resized_frame
from ovlift.datasets.scannet_sens import SensFile
from ovlift.ply import read_ply
from ovlift.vocabularies import NYU40, NYU40_IDS, SCANNET20, SCANNET20_NYU40_IDS, SCANNET200, SCANNET200_IDS

LABEL_TABLE = "scannetv2-labels.combined.tsv"
SPLIT_FILES = {"train": "scannetv2_train.txt", "val": "scannetv2_val.txt", "test": "scannetv2_test.txt"}
LABEL_SETS = {
    # label set -> (vocabulary, table column, class ids in class order)
    "nyu40": (NYU40, "nyu40id", NYU40_IDS),
    "scannet20": (SCANNET20, "nyu40id", SCANNET20_NYU40_IDS),
    "scannet200": (SCANNET200, "id", SCANNET200_IDS),
}


class ScanNetConfig(StoredImageSize):
    """``image_height``/``image_width`` store the 1296x968 colour smaller (its intrinsics scaled;
    depth keeps its own 640x480 camera). The store keeps each frame's JPEG and raw depth
    either way (``docs/datasets.md``: bytes per frame)."""

    paths: tuple[LocalPath, ...] = Field(min_length=1)
    """Scene folders, or folders whose subfolders are scenes (ScanNet's ``scans/``)."""
    frame_stride: int = Field(20, ge=1)
    """Ingest the frames whose stream index is a multiple of this (20: OpenScene, SAS)."""
    frames: Literal["auto", "sens", "exported"] = "auto"
    """Where frames come from: the ``.sens``, the exported folders, or ``auto`` (the ``.sens`` if present)."""
    exported_root: LocalPath | None = None
    """Folder holding ``<scene>/color, depth, pose, intrinsic`` when they are not in the scene folder."""
    depth_scale: float = Field(1000.0, gt=0)
    """Exported depth PNG units per metre (the ``.sens`` header has its own ``depth_shift``)."""
    label_set: Literal["nyu40", "scannet20", "scannet200"] = "scannet20"
    label_table: LocalPath | None = None
    """``scannetv2-labels.combined.tsv``; None: looked for in the scene folder and the two above it."""
    splits_dir: LocalPath | None = None
    """Folder with ScanNet's ``scannetv2_{train,val,test}.txt`` for ``named_splits`` (Tasks/Benchmark)."""


@dataclass(frozen=True)
class _Files:
    folder: Path
    scene_id: str

    def __getitem__(self, suffix: str) -> Path:
        return self.folder / f"{self.scene_id}{suffix}"


class ScanNetDataset(Dataset[ScanNetConfig]):
    """ScanNet v2 scenes in the published layout; see the module docstring."""

    name = "scannet"

    @cached_property
    def _folders(self) -> dict[str, Path]:
        """Scene id -> folder (a folder holding ``<its name>_vh_clean_2.ply``), found on first use."""
        return scene_folders("scannet", self.config.paths, _is_scene, "<scene>/<scene>_vh_clean_2.ply")

    def scene_ids(self) -> list[str]:
        return sorted(self._folders)

    def named_splits(self) -> dict[str, list[str]]:
        """ScanNet's official splits (from ``splits_dir``) restricted to the scenes present."""
        if self.config.splits_dir is None:
            return {}
        present = set(self.scene_ids())
        splits = {}
        for split, file in SPLIT_FILES.items():
            path = Path(self.config.splits_dir) / file
            if path.is_file():
                splits[split] = [s for s in path.read_text().split() if s in present]
        if not splits:
            raise FileNotFoundError(
                f"scannet: splits_dir '{self.config.splits_dir}' has none of {list(SPLIT_FILES.values())}"
            )
        return splits

    def _files(self, scene_id: str) -> _Files:
        return _Files(self._folders[scene_id], scene_id)

    def _exported(self, scene_id: str) -> Path:
        root = self.config.exported_root
        return Path(root) / scene_id if root is not None else self._folders[scene_id]

    def _uses_sens(self, scene_id: str) -> bool:
        sens = self._files(scene_id)[".sens"]
        if self.config.frames == "sens" or (self.config.frames == "auto" and sens.is_file()):
            if not sens.is_file():
                raise FileNotFoundError(f"scene '{scene_id}': no sensor stream {sens} (frames: sens)")
            return True
        return False

    def _label_files(self, scene_id: str) -> list[Path]:
        """The files labels are read from: aggregation + segs, else labels.ply, else none."""
        files = self._files(scene_id)
        aggregation, segs = files[".aggregation.json"], files["_vh_clean_2.0.010000.segs.json"]
        if aggregation.is_file():
            if not segs.is_file():
                raise FileNotFoundError(
                    f"scene '{scene_id}': {aggregation.name} needs its over-segmentation {segs} (segIndices per vertex)"
                )
            return [aggregation, segs, self._label_table(scene_id)]
        if files["_vh_clean_2.labels.ply"].is_file():
            return [files["_vh_clean_2.labels.ply"]]
        return []

    def _label_table(self, scene_id: str) -> Path:
        if self.config.label_table is not None:
            return Path(self.config.label_table)
        folder = self._folders[scene_id]
        for candidate in (folder, folder.parent, folder.parent.parent):
            if (candidate / LABEL_TABLE).is_file():
                return candidate / LABEL_TABLE
        raise FileNotFoundError(
            f"scene '{scene_id}': labels need ScanNet's {LABEL_TABLE} (shipped at the top of the dataset); "
            f"not found in {folder} or the two folders above it; set label_table"
        )

    def fingerprint(self, scene_id: str) -> str:
        """Hash of the config and the contents of every file read (``.sens`` whole: frames
        are in it; exported: the kept frames' files)."""
        digest = hashlib.sha256(
            self.config.model_dump_json(exclude={"paths", "exported_root", "splits_dir", "label_table"}).encode()
        )
        files = [self._files(scene_id)["_vh_clean_2.ply"], *self._label_files(scene_id)]
        if self._uses_sens(scene_id):
            files.append(self._files(scene_id)[".sens"])
        else:
            files += self._exported_files(scene_id)
        digest.update(";".join(file_digests(files)).encode())
        return digest.hexdigest()

    def load(self, scene_id: str) -> SceneSource:
        files = self._files(scene_id)
        mesh_path = files["_vh_clean_2.ply"]
        mesh = read_ply(mesh_path)
        if mesh.faces is None:
            raise ValueError(f"scene '{scene_id}': {mesh_path} has no faces (expected ScanNet's triangle mesh)")
        vocab = LABEL_SETS[self.config.label_set][0]
        labels, instances = self._labels(scene_id, len(mesh.points))
        names, read_frame = (
            self._sens_frames(scene_id) if self._uses_sens(scene_id) else self._exported_frames(scene_id)
        )
        return SceneSource(
            scene_id=scene_id,
            points=mesh.points,
            colors=mesh.colors,
            normals=mesh.normals,
            faces=mesh.faces,
            labels=labels,
            instances=instances,
            class_names=vocab.classes if labels is not None else None,
            frame_names=names,
            read_frame=lambda i: resized_frame(read_frame(i), self.config.image_size),
        )

    # labels

    def _labels(self, scene_id: str, num_points: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        _, column, ids = LABEL_SETS[self.config.label_set]
        label_files = self._label_files(scene_id)
        if not label_files:
            return None, None
        if len(label_files) == 1:
            return self._labels_ply(scene_id, label_files[0], num_points, ids), None
        aggregation, segs, table_path = label_files
        categories, object_ids, vertex_group = _aggregation(scene_id, aggregation, segs, num_points)
        group_ids = np.append(CategoryTable.read(table_path).lookup(categories, column), 0)  # 0: unannotated
        instances = np.append(object_ids, -1).astype(np.int32)[vertex_group]
        return label_indices(group_ids[vertex_group], ids), instances

    def _labels_ply(self, scene_id: str, path: Path, num_points: int, ids: tuple[int, ...]) -> np.ndarray:
        if self.config.label_set == "scannet200":
            raise ValueError(
                f"scene '{scene_id}': label_set scannet200 needs {scene_id}.aggregation.json and "
                f"{scene_id}_vh_clean_2.0.010000.segs.json; {path.name} holds NYU40 ids only"
            )
        mesh = read_ply(path)
        label = mesh.vertex_properties.get("label")
        if label is None:
            raise ValueError(f"scene '{scene_id}': {path} has no vertex property 'label' (the NYU40 id)")
        if len(label) != num_points:
            raise ValueError(
                f"scene '{scene_id}': {path} has {len(label)} vertices, "
                f"expected {num_points} as in {scene_id}_vh_clean_2.ply"
            )
        return label_indices(label.astype(np.int64), ids)

    # frames

    def _stride(self, indices: list[int]) -> list[int]:
        return [i for i in indices if i % self.config.frame_stride == 0]

    def _sens_frames(self, scene_id: str):
        sens = SensFile(self._files(scene_id)[".sens"])
        h = sens.header
        kept = self._stride(list(range(sens.num_frames)))
        cameras = _Cameras(h.intrinsic_color, h.intrinsic_depth, h.extrinsic_color, h.extrinsic_depth)

        def read_frame(k: int) -> Frame:
            frame = sens.frame(kept[k])
            depth = raw_depth(frame.depth_raw, h.depth_shift)  # raw 0 stays 0: invalid
            return cameras.frame(str(kept[k]), (frame.color, frame.color_file), depth, frame.camera_to_world)

        return [str(i) for i in kept], read_frame

    def _exported_indices(self, scene_id: str) -> list[int]:
        pose_dir = self._exported(scene_id) / "pose"
        if not pose_dir.is_dir():
            raise FileNotFoundError(
                f"scene '{scene_id}': no {self._files(scene_id)['.sens']} and no exported folder {pose_dir} "
                "(expected the .sens or reader.py's color/, depth/, pose/, intrinsic/)"
            )
        indices = sorted(int(p.stem) for p in pose_dir.glob("*.txt") if p.stem.isdigit())
        if not indices:
            raise FileNotFoundError(f"scene '{scene_id}': no <i>.txt poses in {pose_dir}")
        return self._stride(indices)

    def _exported_files(self, scene_id: str) -> list[Path]:
        folder = self._exported(scene_id)
        files = [
            folder / "intrinsic" / f"{n}.txt" for n in _CALIBRATION if (folder / "intrinsic" / f"{n}.txt").is_file()
        ]
        for i in self._exported_indices(scene_id):
            files += [folder / "pose" / f"{i}.txt", folder / "color" / f"{i}.jpg", folder / "depth" / f"{i}.png"]
        return files

    def _exported_frames(self, scene_id: str):
        folder = self._exported(scene_id)
        kept = self._exported_indices(scene_id)
        cameras = _Cameras(*(_calibration(scene_id, folder / "intrinsic", n) for n in _CALIBRATION))
        scale = np.float32(self.config.depth_scale)

        def read_frame(k: int) -> Frame:
            i = kept[k]
            depth_path = folder / "depth" / f"{i}.png"
            raw = read_image(
                depth_path, expected=f"reader.py's uint16 depth PNG ({self.config.depth_scale:g} per metre)"
            )
            if raw.ndim != 2:
                raise ValueError(
                    f"scene '{scene_id}': {depth_path}: expected a single-channel uint16 depth image, "
                    f"found shape {raw.shape}"
                )
            depth = raw_depth(raw, scale)
            color = read_color_file(folder / "color" / f"{i}.jpg")
            return cameras.frame(str(i), color, depth, read_matrix(folder / "pose" / f"{i}.txt", (4, 4)))

        return [str(i) for i in kept], read_frame


_CALIBRATION = ("intrinsic_color", "intrinsic_depth", "extrinsic_color", "extrinsic_depth")


def _calibration(scene_id: str, folder: Path, name: str) -> np.ndarray:
    path = folder / f"{name}.txt"
    if name.startswith("extrinsic") and not path.is_file():
        return np.eye(4)  # some exports write only the intrinsics; ScanNet's extrinsics are identity
    if not path.is_file():
        raise FileNotFoundError(f"scene '{scene_id}': no {path} (expected reader.py's 4x4 {name.replace('_', ' ')})")
    return read_matrix(path, (4, 4))


@dataclass(frozen=True)
class _Cameras:
    """ScanNet's two calibrations -> Frame fields (conventions: the module docstring)."""

    intrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_color: np.ndarray
    extrinsic_depth: np.ndarray

    @cached_property
    def rig_to_color(self) -> np.ndarray | None:
        e = np.asarray(self.extrinsic_color, np.float64)
        return None if np.array_equal(e, np.eye(4)) else e

    def frame(
        self,
        name: str,
        color: tuple[np.ndarray, bytes | None],
        depth: tuple[np.ndarray, RawDepth | None],
        pose: np.ndarray,
    ) -> Frame:
        """A frame of (pixels, file) colour and (metres, raw) depth."""
        pose = np.asarray(pose, np.float64)
        if self.rig_to_color is not None:
            pose = pose @ np.linalg.inv(self.rig_to_color)
        depth_to_color = np.asarray(self.extrinsic_color, np.float64) @ np.linalg.inv(
            np.asarray(self.extrinsic_depth, np.float64)
        )
        return Frame(
            name=name,
            color=color[0],
            color_file=color[1],
            depth=depth[0],
            depth_raw=depth[1],
            intrinsics=np.asarray(self.intrinsic_color, np.float64)[:3, :3],
            cam_to_world=pose,
            depth_intrinsics=np.asarray(self.intrinsic_depth, np.float64)[:3, :3],
            depth_to_color=depth_to_color,
        )


def _is_scene(folder: Path) -> bool:
    return folder.is_dir() and (folder / f"{folder.name}_vh_clean_2.ply").is_file()


def _aggregation(
    scene_id: str, aggregation: Path, segs: Path, num_points: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Raw category and object id of each group, and the group of each vertex (-1: none).

    As ScanNet's ``export_train_mesh_for_evaluation.py``: a vertex belongs to the group
    listing its over-segment; where groups overlap the later group wins.
    """
    seg_indices = np.asarray(
        read_json_key(scene_id, segs, "segIndices", "ScanNet's segment id per mesh vertex"), np.int64
    )
    if len(seg_indices) != num_points:
        raise ValueError(
            f"scene '{scene_id}': {segs} has {len(seg_indices)} segIndices, expected one per mesh vertex ({num_points})"
        )
    groups = read_json_key(scene_id, aggregation, "segGroups", "ScanNet's objects with their label and segments")
    segments, inverse = np.unique(seg_indices, return_inverse=True)
    seg_group = np.full(len(segments), -1, np.int64)
    for g, group in enumerate(groups):
        if not all(k in group for k in ("objectId", "label", "segments")):
            raise ValueError(
                f"scene '{scene_id}': {aggregation} segGroups[{g}] needs objectId, label and segments; "
                f"found {sorted(group)}"
            )
        hit = np.isin(segments, np.asarray(group["segments"], np.int64))
        seg_group[hit] = g
    object_ids = np.array([int(group["objectId"]) for group in groups], np.int64)
    return [group["label"] for group in groups], object_ids, seg_group[inverse]
