"""Writes a toy scene (``tests/layout_scene``) in ScanNet's published layout.

Independent of ovlift's reader: the ``.sens`` is packed field by field with
``struct`` as ``sensorData.h`` lays it out, the PLYs carry ScanNet's element and
property names (``vertex``: x y z red green blue alpha [label]; ``face``:
``vertex_indices`` as list uchar int), the JSON files ScanNet's keys.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from layout_scene import LayoutScene
from PIL import Image
from plyfile import PlyData, PlyElement

RAW_CATEGORY = {
    # toy class -> the raw category the annotators "typed" (as in ScanNet, not always the class name)
    "wall": "wall",
    "floor": "floor",
    "ceiling": "ceiling",
    "chair": "office chair",
    "table": "table",
    "cabinet": "kitchen cabinets",
    "curtain": "curtains",
}
TABLE_ROWS = (
    # the columns the reader needs, values as in ScanNet's scannetv2-labels.combined.tsv
    ("1", "wall", "wall", "1", "wall", "1"),
    ("3", "floor", "floor", "2", "floor", "2"),
    ("41", "ceiling", "ceiling", "22", "ceiling", "17"),
    ("10", "office chair", "office chair", "5", "chair", "3"),
    ("4", "table", "table", "7", "table", "5"),
    ("29", "kitchen cabinets", "kitchen cabinet", "3", "cabinet", "7"),
    ("21", "curtains", "curtain", "16", "curtain", "12"),
)
EXPECTED = {
    # raw category -> class name in nyu40, scannet20 (None: ignored), scannet200
    "wall": ("wall", "wall", "wall"),
    "floor": ("floor", "floor", "floor"),
    "ceiling": ("ceiling", None, "ceiling"),
    "office chair": ("chair", "chair", "office chair"),
    "table": ("table", "table", "table"),
    "kitchen cabinets": ("cabinet", "cabinet", "kitchen cabinet"),
    "curtains": ("curtain", "curtain", "curtain"),
}
UNANNOTATED_INSTANCE = 3
"""A wall no annotator labelled: in no segGroup."""
INVALID_POSE_FRAME = 1
"""ScanNet writes -inf poses where its tracker was lost."""
DEPTH_SHIFT = 1000.0


def nyu40_ids(layout: LayoutScene) -> np.ndarray:
    """(N,) NYU40 id per vertex as ScanNet's labels.ply stores it (0: unannotated)."""
    nyu = {row[1]: int(row[3]) for row in TABLE_ROWS}
    per_instance = np.array([nyu[RAW_CATEGORY[c]] for c in layout.scene.instance_class])
    per_instance[UNANNOTATED_INSTANCE] = 0
    return per_instance[layout.scene.point_instance]


def write_label_table(path: Path) -> Path:
    header = ("id", "raw_category", "category", "nyu40id", "nyu40class", "mpcat40index")
    path.write_text("\n".join("\t".join(row) for row in (header, *TABLE_ROWS)) + "\n")
    return path


def sens_bytes(layout: LayoutScene, num_frames: int | None = None, jpeg_quality: int = 95) -> bytes:
    """A whole ``.sens`` file in memory (small scenes only; ``write_sens`` streams)."""
    buf = io.BytesIO()
    write_sens(buf, layout, num_frames, jpeg_quality)
    return buf.getvalue()


def sens_header(
    color_k: np.ndarray, depth_k: np.ndarray, depth_to_color: np.ndarray, num_frames: int, color_hw, depth_hw
) -> bytes:
    def mat(m: np.ndarray) -> bytes:
        return struct.pack("<16f", *np.asarray(m, np.float32).reshape(-1))

    def k4(k: np.ndarray) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = k
        return out

    name = b"StructureSensor"
    # sensorData.h: extrinsics are world(rig)-to-camera; the rig is the colour camera here
    head = struct.pack("<IQ", 4, len(name)) + name
    head += mat(k4(color_k)) + mat(np.eye(4))
    head += mat(k4(depth_k)) + mat(np.linalg.inv(depth_to_color))
    head += struct.pack("<ii", 2, 1)  # jpeg, zlib_ushort
    head += struct.pack("<IIIIfQ", color_hw[1], color_hw[0], depth_hw[1], depth_hw[0], DEPTH_SHIFT, num_frames)
    return head


def frame_record(pose: np.ndarray, index: int, color: np.ndarray, depth_m: np.ndarray, jpeg_quality: int) -> bytes:
    jpeg = io.BytesIO()
    Image.fromarray(color).save(jpeg, format="JPEG", quality=jpeg_quality)
    raw = np.round(np.asarray(depth_m) * DEPTH_SHIFT).astype("<u2")
    depth = zlib.compress(raw.tobytes())
    stamp = 33_333 * index  # microseconds
    return (
        struct.pack("<16f", *np.asarray(pose, np.float32).reshape(-1))
        + struct.pack("<QQQQ", stamp, stamp + 100, len(jpeg.getvalue()), len(depth))
        + jpeg.getvalue()
        + depth
    )


def frame_pose(layout: LayoutScene, i: int) -> np.ndarray:
    if i == INVALID_POSE_FRAME:
        return np.full((4, 4), -np.inf)
    return layout.views[i].color.cam_to_world


def write_sens(f, layout: LayoutScene, num_frames: int | None = None, jpeg_quality: int = 95) -> None:
    views = layout.views[:num_frames]
    f.write(
        sens_header(
            layout.color_intrinsics,
            layout.depth_intrinsics,
            layout.depth_to_color,
            len(views),
            views[0].color.color.shape,
            views[0].depth.depth.shape,
        )
    )
    for i, view in enumerate(views):
        f.write(frame_record(frame_pose(layout, i), i, view.color.color, view.depth.depth, jpeg_quality))


def write_mesh(folder: Path, scene_id: str, layout: LayoutScene, labels_ply: bool = False) -> None:
    scene = layout.scene
    colors = scene.instance_color[scene.point_instance].astype(np.uint8)
    suffix = "_vh_clean_2.labels.ply" if labels_ply else "_vh_clean_2.ply"
    write_scannet_ply(
        folder / f"{scene_id}{suffix}", scene.points, colors, scene.faces, nyu40_ids(layout) if labels_ply else None
    )


def write_scannet_ply(path: Path, points, colors, faces, labels=None) -> None:
    """A PLY with ScanNet's header: x y z float, red green blue alpha uchar [label ushort];
    faces as ``list uchar int vertex_indices``."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    vertex = np.empty(len(points), fields + ([("label", "<u2")] if labels is not None else []))
    for axis, name in enumerate("xyz"):
        vertex[name] = points[:, axis]
    for axis, name in enumerate(("red", "green", "blue")):
        vertex[name] = colors[:, axis]
    vertex["alpha"] = 255
    if labels is not None:
        vertex["label"] = labels
    face = np.empty(len(faces), [("vertex_indices", "O")])
    face["vertex_indices"] = list(faces.astype(np.int32))
    elements = [
        PlyElement.describe(vertex, "vertex"),
        PlyElement.describe(face, "face", val_types={"vertex_indices": "i4"}, len_types={"vertex_indices": "u1"}),
    ]
    PlyData(elements, text=False, byte_order="<").write(str(path))


def write_annotations(folder: Path, scene_id: str, layout: LayoutScene) -> None:
    """segs.json (over-segments: each instance cut in three by vertex index) and aggregation.json."""
    instance = layout.scene.point_instance
    vertex = np.arange(len(instance))
    seg_indices = 1000 + 7 * instance + vertex % 3
    segs = {
        "params": {"kThresh": "0.0001", "segMinVerts": "20", "minPoints": "750", "maxPoints": "5000"},
        "sceneId": scene_id,
        "segIndices": seg_indices.tolist(),
    }
    (folder / f"{scene_id}_vh_clean_2.0.010000.segs.json").write_text(json.dumps(segs))
    groups = []
    for obj, cls in enumerate(layout.scene.instance_class):
        if obj == UNANNOTATED_INSTANCE:
            continue
        segments = sorted(set(seg_indices[instance == obj].tolist()))
        groups.append({"id": len(groups), "objectId": obj, "segments": segments, "label": RAW_CATEGORY[cls]})
    aggregation = {
        "sceneId": f"scannet.{scene_id}",
        "appId": "Aggregator.v2",
        "segGroups": groups,
        "segmentsFile": f"scannet.{scene_id}_vh_clean_2.0.010000.segs.json",
    }
    (folder / f"{scene_id}.aggregation.json").write_text(json.dumps(aggregation))


def write_scene(root: Path, scene_id: str, layout: LayoutScene, sens: bool = True, exported: bool = False) -> Path:
    """``root/scene_id/`` with the mesh, annotations and frames as asked; the tsv beside ``root``
    (ScanNet: ``<dataset>/scannetv2-labels.combined.tsv``, ``<dataset>/scans/<scene>/``)."""
    folder = root / scene_id
    folder.mkdir(parents=True, exist_ok=True)
    write_label_table(root.parent / "scannetv2-labels.combined.tsv")
    write_mesh(folder, scene_id, layout)
    write_annotations(folder, scene_id, layout)
    if sens:
        with (folder / f"{scene_id}.sens").open("wb") as f:
            write_sens(f, layout)
    if exported:
        write_exported(folder, layout)
    return folder


def write_exported(folder: Path, layout: LayoutScene, frame_skip: int = 1) -> None:
    """What ScanNet's ``reader.py`` writes from the ``.sens`` (every ``frame_skip``-th frame)."""
    for sub in ("color", "depth", "pose", "intrinsic"):
        (folder / sub).mkdir(parents=True, exist_ok=True)

    def save(matrix: np.ndarray, path: Path) -> None:
        np.savetxt(path, np.asarray(matrix, np.float32), fmt="%f")  # reader.py's save_mat_to_file

    for i in range(0, len(layout.views), frame_skip):
        view = layout.views[i]
        Image.fromarray(view.color.color).save(folder / "color" / f"{i}.jpg", quality=95)
        raw = np.round(view.depth.depth * DEPTH_SHIFT).astype(np.uint16)
        Image.fromarray(raw).save(folder / "depth" / f"{i}.png")
        save(frame_pose(layout, i), folder / "pose" / f"{i}.txt")
    for name, matrix in (
        ("intrinsic_color", layout.color_intrinsics),
        ("intrinsic_depth", layout.depth_intrinsics),
    ):
        k4 = np.eye(4)
        k4[:3, :3] = matrix
        save(k4, folder / "intrinsic" / f"{name}.txt")
    save(np.eye(4), folder / "intrinsic" / "extrinsic_color.txt")
    save(np.linalg.inv(layout.depth_to_color), folder / "intrinsic" / "extrinsic_depth.txt")
