"""A toy room written as one Matterport3D scan, in the published file layout.

``write_matterport_scan`` puts ``layout_scene``'s room (colour and depth at one size and
intrinsics, as Matterport's undistorted images are) under ``<root>/<scan>/``: the room as
``region0`` (binary PLY with the published vertex and face properties, ``.fsegs.json``,
``.semseg.json``), a small box far away as ``region1`` (no camera inside it), the
``.conf`` camera file with poses in Matterport's OpenGL camera axes, and the images:
the room's views plus cameras above the room, outside both regions' boxes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from layout_scene import LayoutScene
from PIL import Image
from plyfile import PlyData, PlyElement

OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])

MAPPING_HEADER = (
    "index raw_category category count nyuId nyu40id eigen13id nyuClass nyu40class eigen13class "
    "ModelNet40 ModelNet10 ShapeNetCore55 synsetoffset wnsynsetid wnsynsetkey mpcat40index mpcat40"
).split()

MAPPING_ROWS = {
    # raw category: (index, nyu40id, nyuClass, mpcat40index, mpcat40), as in Matterport's category_mapping.tsv
    "wall": (1, 1, "wall", 1, "wall"),
    "ceiling": (3, 22, "ceiling", 17, "ceiling"),
    "floor": (4, 2, "floor", 2, "floor"),
    "window": (6, 9, "window", 9, "window"),
    "doorframe": (8, 8, "door", 4, "door"),
    "remove": (9, 0, "void", 0, "void"),
    "object": (11, 40, "", 39, "objects"),
    "curtain": (14, 16, "curtain", 12, "curtain"),
    "sink": (22, 34, "sink", 15, "sink"),
    "couch": (24, 6, "sofa", 10, "sofa"),
    "dining chair": (25, 5, "chair", 3, "chair"),
    "bed": (26, 4, "bed", 11, "bed"),
    "toilet": (28, 33, "toilet", 18, "toilet"),
    "kitchen cabinet": (35, 3, "cabinet", 7, "cabinet"),
    "unknown": (40, 40, "unknown", 41, "unlabeled"),
    "desk": (42, 14, "desk", 5, "table"),
    "painting": (43, 11, "picture", 6, "picture"),
    "countertop": (48, 12, "counter", 26, "counter"),
    "bathtub": (55, 36, "bathtub", 25, "bathtub"),
    "side table": (73, 7, "table", 5, "table"),
    "refrigerator": (87, 24, "refridgerator", 37, "appliances"),
    "bookshelf": (88, 10, "bookshelf", 31, "shelving"),
    "wardrobe": (90, 39, "wardrobe", 36, "furniture"),
}
"""Rows of Matterport's table (their real index and mappings) for the toy's classes and a few
that map to nothing."""

RAW_CATEGORY = {
    "wall": "wall",
    "floor": "floor",
    "ceiling": "ceiling",
    "chair": "dining chair",
    "table": "side table",
    "desk": "desk",
    "sofa": "couch",
    "bed": "bed",
    "cabinet": "kitchen cabinet",
    "bookshelf": "bookshelf",
    "refrigerator": "refrigerator",
    "counter": "countertop",
    "toilet": "toilet",
    "sink": "sink",
    "bathtub": "bathtub",
    "otherfurniture": "wardrobe",
    "door": "doorframe",
    "window": "window",
    "picture": "painting",
    "curtain": "curtain",
}
"""The raw category a Matterport annotator might give each toy class."""


@dataclass
class MatterportScan:
    root: Path
    scan: str
    room: LayoutScene
    face_instance: np.ndarray
    """(F,) object (segGroup id = toy instance) of each face of region0."""
    face_category: np.ndarray
    """(F,) ``category_id`` of each face (the table's index of its object's raw category)."""
    raw_category: list[str]
    """Raw category per toy instance."""
    view_names: list[str]
    """Colour file stem of each room view (the cameras inside region0's box)."""
    outside_names: list[str]
    """Colour file stems of the cameras above the room."""
    centres: np.ndarray
    """(C, 3) every camera centre, in the .conf's order (room views, then outside)."""
    box_low: np.ndarray
    box_high: np.ndarray
    """region1's box."""

    @property
    def scan_dir(self) -> Path:
        return self.root / self.scan


def write_mapping_table(path: Path) -> Path:
    """A category_mapping.tsv with Matterport's header and ``MAPPING_ROWS``."""
    lines = ["\t".join(MAPPING_HEADER)]
    for raw, (index, nyu40, nyu_class, mpcat_index, mpcat) in sorted(MAPPING_ROWS.items(), key=lambda r: r[1][0]):
        row = dict.fromkeys(MAPPING_HEADER, "")
        row.update(index=index, raw_category=raw, category=raw, count=1, nyu40id=nyu40, nyuClass=nyu_class)
        row.update(mpcat40index=mpcat_index, mpcat40=mpcat)
        lines.append("\t".join(str(row[c]) for c in MAPPING_HEADER))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_region_ply(path: Path, points, normals, colors, faces, segments, objects, categories) -> None:
    """Binary little-endian PLY with the property names and types Matterport publishes; per face
    (Matterport's notes) material_id is the segment, segment_id the object, category_id the
    category_mapping.tsv index."""
    vertex = np.zeros(
        len(points),
        dtype=[(n, "<f4") for n in ("x", "y", "z", "nx", "ny", "nz", "tx", "ty")]
        + [(c, "u1") for c in ("red", "green", "blue")],
    )
    for axis, name in enumerate("xyz"):
        vertex[name] = points[:, axis]
        vertex["n" + name] = normals[:, axis]
    for axis, name in enumerate(("red", "green", "blue")):
        vertex[name] = colors[:, axis]
    face = np.zeros(
        len(faces),
        dtype=[("vertex_indices", "<i4", (3,)), ("material_id", "<i4"), ("segment_id", "<i4"), ("category_id", "<i4")],
    )
    face["vertex_indices"] = faces
    face["material_id"], face["segment_id"], face["category_id"] = segments, objects, categories
    elements = [
        PlyElement.describe(vertex, "vertex"),
        PlyElement.describe(face, "face", val_types={"vertex_indices": "i4"}, len_types={"vertex_indices": "u1"}),
    ]
    PlyData(elements, text=False, byte_order="<").write(str(path))


def write_region(folder: Path, scan: str, number: int, points, normals, colors, faces, face_instance, raw_category):
    """regionN.ply, .fsegs.json and .semseg.json of a region whose objects are ``face_instance``;
    each object is split into two segments (Matterport groups over-segments into objects)."""
    segments = 2 * face_instance + (np.arange(len(faces)) % 2) + 100
    categories = np.array([MAPPING_ROWS[raw_category[i]][0] for i in face_instance], np.int32)
    write_region_ply(
        folder / f"region{number}.ply", points, normals, colors, faces, segments, face_instance, categories
    )
    scene = f"{scan}_region{number}"
    (folder / f"region{number}.fsegs.json").write_text(json.dumps({"sceneId": scene, "segIndices": segments.tolist()}))
    groups = [
        {
            "id": int(i),
            "objectId": int(i),
            "label": raw_category[i],
            "segments": sorted({int(s) for s in segments[face_instance == i]}),
        }
        for i in np.unique(face_instance)
    ]
    (folder / f"region{number}.semseg.json").write_text(
        json.dumps({"sceneId": scene, "appId": "toy", "segGroups": groups})
    )
    return categories


def write_matterport_scan(
    root: Path, room: LayoutScene, scan: str = "17DRP5sb8fy", num_outside: int = 2
) -> MatterportScan:
    scan_dir = root / scan
    for sub in (
        "region_segmentations",
        "undistorted_camera_parameters",
        "undistorted_color_images",
        "undistorted_depth_images",
    ):
        (scan_dir / sub).mkdir(parents=True)
    scene = room.scene
    raw = [RAW_CATEGORY[c] for c in scene.instance_class]
    # a face's object: the instance most of its vertices have (welded vertices keep one instance)
    corner = scene.point_instance[scene.faces]
    face_instance = np.where(corner[:, 1] == corner[:, 2], corner[:, 1], corner[:, 0])
    colors = scene.instance_color[scene.point_instance].astype(np.uint8)
    regions = scan_dir / "region_segmentations"
    categories = write_region(regions, scan, 0, scene.points, scene.normals, colors, scene.faces, face_instance, raw)

    # region1: a 1 m box 20 m from the room, no camera inside
    low = np.array([20.0, 1.0, 0.0])
    corners = low + np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64)
    box_faces = np.array(
        [
            [0, 1, 3],
            [0, 3, 2],
            [4, 6, 7],
            [4, 7, 5],
            [0, 4, 5],
            [0, 5, 1],
            [2, 3, 7],
            [2, 7, 6],
            [0, 2, 6],
            [0, 6, 4],
            [1, 5, 7],
            [1, 7, 3],
        ]
    )
    write_region(
        regions,
        scan,
        1,
        corners,
        np.zeros_like(corners),
        np.full((8, 3), 128),
        box_faces,
        np.zeros(12, np.int64),
        ["side table"],
    )

    poses = [v.color.cam_to_world for v in room.views]
    above = [
        poses[i % len(poses)] + np.outer(np.eye(4)[2], np.eye(4)[3]) * 10.0 for i in range(num_outside)
    ]  # z + 10 m
    names, lines = [], []
    for i, pose in enumerate(poses + above):
        # Matterport's order: per panorama, per tripod camera (0-2) its six yaws (0-5)
        pano = hashlib.md5(f"{scan}-{i // 18}".encode()).hexdigest()
        camera, yaw = (i // 6) % 3, i % 6
        color_name, depth_name = f"{pano}_i{camera}_{yaw}.jpg", f"{pano}_d{camera}_{yaw}.png"
        view = room.views[i % len(room.views)]
        Image.fromarray(view.color.color).save(scan_dir / "undistorted_color_images" / color_name, quality=95)
        raw_depth = np.round(view.depth.depth.astype(np.float64) * 4000).astype(np.uint16)
        raw_depth[:2, :3] = 0  # no measurement
        Image.fromarray(raw_depth).save(scan_dir / "undistorted_depth_images" / depth_name)
        if i % 6 == 0:  # one intrinsics line before each camera's six yaws, as Matterport writes them
            lines.append("intrinsics_matrix " + " ".join(f"{v:.6f}" for v in room.color_intrinsics.reshape(-1)))
        lines.append(f"scan {depth_name} {color_name} " + " ".join(f"{v:.9f}" for v in (pose @ OPENGL).reshape(-1)))
        names.append(Path(color_name).stem)
    header = [
        "dataset matterport",
        f"n_images {len(names)}",
        "depth_directory undistorted_depth_images",
        "color_directory undistorted_color_images",
        "",
    ]
    (scan_dir / "undistorted_camera_parameters" / f"{scan}.conf").write_text("\n".join(header + lines) + "\n")
    return MatterportScan(
        root=root,
        scan=scan,
        room=room,
        face_instance=face_instance,
        face_category=categories,
        raw_category=raw,
        view_names=names[: len(poses)],
        outside_names=names[len(poses) :],
        centres=np.array([p[:3, 3] for p in poses + above]),
        box_low=low,
        box_high=low + 1,
    )
