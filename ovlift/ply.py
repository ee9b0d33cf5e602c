"""PLY point clouds and meshes, read and written through ``plyfile``.

Reading takes what scanners and datasets write (ScanNet's ``*_vh_clean_2.ply``,
Matterport regions, S3DIS exports): ``x y z`` and, when present, ``red green blue``
colours, ``nx ny nz`` normals, triangle faces (``vertex_indices`` or
``vertex_index``), and every other vertex and face property by name (e.g.
ScanNet's ``label``, Matterport's face ``category_id``). A damaged or hostile
file fails with a ``PlyError`` naming it, without allocating more than its size
justifies: the header's counts are checked against the file's size first.
Writing is binary little-endian, to a temporary file renamed into place, so a
killed writer never leaves half a file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

from ovlift.atomic_files import write_atomically

FACE_LISTS = ("vertex_indices", "vertex_index")
TRIANGLES = {"face": dict.fromkeys(FACE_LISTS, 3)}
"""plyfile's ``known_list_len``: faces of three vertices."""
MAX_HEADER_BYTES = 1 << 16
"""A header must end within this many bytes (real ones take a few hundred)."""
FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")
TYPE_BYTES = {
    name: size
    for size, names in (
        (1, "char int8 i1 uchar uint8 u1 b1"),
        (2, "short int16 i2 ushort uint16 u2"),
        (4, "int int32 i4 uint uint32 u4 float float32 f4"),
        (8, "double float64 f8"),
    )
    for name in names.split()
}
"""Bytes of each property type plyfile reads, by every name it accepts."""


class PlyError(ValueError):
    """A PLY file that cannot be read; the message names the file and what was wrong."""


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


def _columns(vertex: np.ndarray, names: tuple[str, ...], dtype: str, path: Path) -> np.ndarray | None:
    if not all(n in vertex.dtype.names for n in names):
        return None
    lists = [n for n in names if vertex.dtype[n].kind == "O"]
    if lists:
        raise PlyError(f"PLY '{path}': vertex properties {lists} are lists, expected one number per vertex")
    return np.stack([vertex[n] for n in names], axis=1).astype(dtype)


def read_ply(path: str | os.PathLike[str]) -> PlyMesh:
    """A PLY file's vertices (and triangles); errors (``PlyError``) name the file and what is wrong."""
    path = Path(path)
    ply = _read_checked(path)
    if "vertex" not in ply:
        raise PlyError(f"PLY '{path}' has no 'vertex' element (found {[e.name for e in ply.elements]})")
    vertex = ply["vertex"].data
    points = _columns(vertex, ("x", "y", "z"), "float32", path)
    if points is None:
        raise PlyError(f"PLY '{path}': vertices need x, y, z; found properties {list(vertex.dtype.names)}")
    known = {"x", "y", "z", "red", "green", "blue", "nx", "ny", "nz"}
    face = ply["face"].data if "face" in ply else None
    return PlyMesh(
        points=points,
        colors=_columns(vertex, ("red", "green", "blue"), "uint8", path),
        normals=_columns(vertex, ("nx", "ny", "nz"), "float32", path),
        faces=_faces(ply, path, len(points)),
        vertex_properties={n: np.asarray(vertex[n]) for n in vertex.dtype.names if n not in known},
        face_properties={
            n: np.array(face[n])  # a copy: the file stays mapped otherwise
            for n in (face.dtype.names if face is not None else ())
            if n not in FACE_LISTS and face[n].dtype != object
        },
    )


class _BoundedReader(io.BufferedReader):
    """A binary file whose reads never ask for more than its size: plyfile reads a binary list
    as long as the file says, and Python allocates a read's whole request before reading."""

    def __init__(self, path: Path) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self.size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1, /) -> bytes:
        return super().read(size if size is None or size < 0 else min(size, self.size))


def _read_checked(path: Path) -> PlyData:
    """plyfile's reading, once the header's element counts fit the file: plyfile allocates an
    element's rows before reading them, so a damaged count would ask for terabytes."""
    try:
        with _BoundedReader(path) as f:
            _check_header(f.read(MAX_HEADER_BYTES), f.size)
            f.seek(0)
            try:  # triangles as one array: plyfile maps them at once instead of a Python loop per face
                return PlyData.read(f, known_list_len=TRIANGLES)
            except PlyParseError as err:
                if "unexpected list length" not in str(err):
                    raise
            f.seek(0)
            return PlyData.read(f)  # polygons: reported by _faces
    except OSError as err:
        raise PlyError(f"cannot read PLY '{path}': {err.strerror or err}") from None
    # ValueError: plyfile's own and _check_header's; OverflowError: an ascii value beyond its type (300 as uchar)
    except (PlyParseError, ValueError, OverflowError) as err:
        raise PlyError(f"cannot read PLY '{path}': {err}") from None


@dataclass
class _Element:
    name: str
    count: int
    row_bytes: int = 0
    """The fewest bytes a binary row takes (every list empty)."""
    words: int = 0
    """The fewest words an ascii row has (plyfile reads one row per line)."""


def _check_header(head: bytes, size: int) -> None:
    """ValueError unless ``head`` starts with a PLY header whose elements fit in the ``size`` byte file."""
    newline = next((nl for nl in (b"\r\n", b"\r", b"\n") if head.startswith(b"ply" + nl)), None)
    if newline is None:
        raise ValueError("expected 'ply' on the first line")
    end = head.find(newline + b"end_header" + newline)
    if end < 0:
        raise ValueError(f"no 'end_header' line in the first {MAX_HEADER_BYTES} bytes")
    try:
        lines = head[:end].decode("ascii").split(newline.decode())
    except UnicodeDecodeError as err:
        raise ValueError(f"the header is not ASCII: byte {head[err.start]:#04x} at {err.start}") from None
    ascii_format, elements = _parse_header(lines)
    _check_counts(elements, ascii_format, size - (end + len(b"end_header") + 2 * len(newline)))


def _parse_header(lines: list[str]) -> tuple[bool, list[_Element]]:
    """Whether the rows are ascii, and the elements with their smallest rows."""
    formats: list[int] = []
    elements: list[_Element] = []
    for number, line in enumerate(lines, 1):
        words = line.split()
        if words[:1] == ["property"] and not elements:
            raise ValueError(f"header line {number} is a property before any element: {line!r}")
        try:
            if words[:1] == ["format"]:
                formats.append(FORMATS.index(words[1]))
            elif words[:1] == ["element"]:
                elements.append(_Element(words[1], int(words[2])))
                if elements[-1].count < 0:
                    raise ValueError("a negative count")  # reported below as the line
            elif words[:1] == ["property"]:
                elements[-1].row_bytes += TYPE_BYTES[words[2] if words[1] == "list" else words[1]]
                elements[-1].words += 1  # a list takes its length, then zero or more values
        except (IndexError, KeyError, ValueError):
            raise ValueError(f"header line {number} is malformed: {line!r}") from None
    if len(formats) != 1:
        raise ValueError(f"the header needs one 'format' line, one of {FORMATS}; found {len(formats)}")
    return FORMATS[formats[0]] == "ascii", elements


def _check_counts(elements: list[_Element], ascii_format: bool, data_bytes: int) -> None:
    """Every element's rows at their smallest must fit in the bytes after the header."""
    need = 0
    for e in elements:
        least = max(2 * e.words if ascii_format else e.row_bytes, 1)  # ascii: a word and a space or newline
        before, need = need, need + e.count * least
        if need - ascii_format > data_bytes:  # an ascii file's last line may lack its newline
            after = f", after {before} for the elements before it" if before else ""
            raise ValueError(
                f"element '{e.name}' declares {e.count} rows of at least {least} bytes ({e.count * least} bytes"
                f"{after}), but only {data_bytes} bytes follow the header"
            )


def _faces(ply: PlyData, path: Path, num_vertices: int) -> np.ndarray | None:
    if "face" not in ply or ply["face"].count == 0:
        return None
    data = ply["face"].data
    name = next((n for n in FACE_LISTS if n in data.dtype.names), None)
    if name is None:
        raise PlyError(f"PLY '{path}': faces need vertex_indices; found properties {list(data.dtype.names)}")
    faces = data[name]
    if faces.dtype == object:  # one array per face: ASCII files, or not all triangles
        sizes = {len(f) for f in faces}
        if sizes != {3}:
            found = sorted(sizes)
            raise PlyError(f"PLY '{path}': only triangle faces are supported, found faces of {found} vertices")
        faces = np.stack(faces)
    faces = np.asarray(faces).astype(np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise PlyError(f"PLY '{path}': faces of shape {faces.shape}, expected (F, 3) vertex indices")
    if faces.min() < 0 or faces.max() >= num_vertices:
        bad = int(faces.max()) if faces.max() >= num_vertices else int(faces.min())
        raise PlyError(f"PLY '{path}': a face indexes vertex {bad}, expected indices in [0, {num_vertices})")
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
    return write_atomically(path, lambda tmp: PlyData(elements, text=False, byte_order="<").write(str(tmp)))
