"""PLY point clouds and meshes, read and written through ``plyfile``.

Reading takes what scanners and datasets write (ScanNet's ``*_vh_clean_2.ply``,
Matterport regions, S3DIS exports): ``x y z`` and, when present, ``red green blue``
colours, ``nx ny nz`` normals, triangle faces (``vertex_indices`` or
``vertex_index``), and every other vertex and face property by name (e.g.
ScanNet's ``label``, Matterport's face ``category_id``). Writing is binary
little-endian, to a temporary file renamed into place, so a killed writer never
leaves half a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

FACE_LISTS = ("vertex_indices", "vertex_index")
TRIANGLES = {"face": dict.fromkeys(FACE_LISTS, 3)}
"""plyfile's ``known_list_len``: faces of three vertices."""


@dataclass
class PlyMesh:
    points: np.ndarray
    """(N, 3) float32 vertex positions."""
    colors: np.ndarray | None = None
    """(N, 3) uint8 RGB, if the file has ``red green blue``."""
    normals: np.ndarray | None = None
    """(N, 3) float32, if the file has ``nx ny nz``."""
    faces: np.ndarray | None = None
    """(F, 3) int32 triangles indexing the vertices, if the file has faces."""
    vertex_properties: dict[str, np.ndarray] = field(default_factory=dict)
    """Every other per-vertex property by name (e.g. ``label``, ``alpha``)."""
    face_properties: dict[str, np.ndarray] = field(default_factory=dict)
    """Every scalar per-face property by name (e.g. Matterport's ``category_id``, ``segment_id``)."""


def _columns(vertex: np.ndarray, names: tuple[str, ...], dtype: str) -> np.ndarray | None:
    if not all(n in vertex.dtype.names for n in names):
        return None
    return np.stack([vertex[n] for n in names], axis=1).astype(dtype)


def read_ply(path: str | os.PathLike[str]) -> PlyMesh:
    """A PLY file's vertices (and triangles); errors name the file and what is wrong."""
    path = Path(path)
    try:
        try:  # triangles as one array: plyfile maps them at once instead of a Python loop per face
            ply = PlyData.read(str(path), known_list_len=TRIANGLES)
        except PlyParseError as err:
            if "unexpected list length" not in str(err):
                raise
            ply = PlyData.read(str(path))  # polygons: reported below
    except (OSError, PlyParseError, ValueError) as err:
        raise ValueError(f"cannot read PLY '{path}': {err}") from None
    if "vertex" not in ply:
        raise ValueError(f"PLY '{path}' has no 'vertex' element (found {[e.name for e in ply.elements]})")
    vertex = ply["vertex"].data
    points = _columns(vertex, ("x", "y", "z"), "float32")
    if points is None:
        raise ValueError(f"PLY '{path}': vertices need x, y, z; found properties {list(vertex.dtype.names)}")
    known = {"x", "y", "z", "red", "green", "blue", "nx", "ny", "nz"}
    face = ply["face"].data if "face" in ply else None
    return PlyMesh(
        points=points,
        colors=_columns(vertex, ("red", "green", "blue"), "uint8"),
        normals=_columns(vertex, ("nx", "ny", "nz"), "float32"),
        faces=_faces(ply, path, len(points)),
        vertex_properties={n: np.asarray(vertex[n]) for n in vertex.dtype.names if n not in known},
        face_properties={
            n: np.array(face[n])  # a copy: the file stays mapped otherwise
            for n in (face.dtype.names if face is not None else ())
            if n not in FACE_LISTS and face[n].dtype != object
        },
    )


def _faces(ply: PlyData, path: Path, num_vertices: int) -> np.ndarray | None:
    if "face" not in ply or ply["face"].count == 0:
        return None
    data = ply["face"].data
    name = next((n for n in FACE_LISTS if n in data.dtype.names), None)
    if name is None:
        raise ValueError(f"PLY '{path}': faces need vertex_indices; found properties {list(data.dtype.names)}")
    faces = data[name]
    if faces.dtype == object:  # one array per face: ASCII files, or not all triangles
        sizes = {len(f) for f in faces}
        if sizes != {3}:
            found = sorted(sizes)
            raise ValueError(f"PLY '{path}': only triangle faces are supported, found faces of {found} vertices")
        faces = np.stack(faces)
    faces = np.asarray(faces).astype(np.int64)
    if faces.min() < 0 or faces.max() >= num_vertices:
        bad = int(faces.max()) if faces.max() >= num_vertices else int(faces.min())
        raise ValueError(f"PLY '{path}': a face indexes vertex {bad}, expected indices in [0, {num_vertices})")
    return faces.astype(np.int32)


def write_ply(
    path: str | os.PathLike[str],
    points: np.ndarray,
    colors: np.ndarray | None = None,
    faces: np.ndarray | None = None,
    **scalars: np.ndarray,
) -> Path:
    """Binary PLY of (N, 3) points, optional (N, 3) uint8 colours, (F, 3) triangles and
    per-vertex float scalars by name (e.g. ``similarity=...``, shown by CloudCompare)."""
    path = Path(path)
    n = len(points)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    fields += [(c, "u1") for c in ("red", "green", "blue")] if colors is not None else []
    fields += [(name, "<f4") for name in scalars]
    vertex = np.empty(n, dtype=fields)
    for axis, name in enumerate("xyz"):
        vertex[name] = points[:, axis]
    if colors is not None:
        for axis, name in enumerate(("red", "green", "blue")):
            vertex[name] = colors[:, axis]
    for name, values in scalars.items():
        vertex[name] = values
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = faces
        elements.append(PlyElement.describe(face, "face"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        PlyData(elements, text=False, byte_order="<").write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
