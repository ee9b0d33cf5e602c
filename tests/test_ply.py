"""PLY through plyfile: what we write reads back, and meshes as datasets ship them read."""

import re
import struct

import numpy as np
import pytest
from fuzzing import fuzz, traced
from plyfile import PlyData, PlyElement

from ovlift.ply import PlyError, read_ply, write_ply


def test_points_colours_faces_and_scalars_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    faces = rng.integers(0, 50, (20, 3)).astype(np.int32)
    similarity = rng.random(50).astype(np.float32)
    path = write_ply(tmp_path / "m.ply", points, colors, faces, similarity=similarity)
    mesh = read_ply(path)
    np.testing.assert_array_equal(mesh.points, points)
    np.testing.assert_array_equal(mesh.colors, colors)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(mesh.vertex_properties["similarity"], similarity)
    assert mesh.normals is None
    assert [p.name for p in tmp_path.iterdir()] == ["m.ply"]  # no temporary file left


SCANNET_STYLE = """ply
format ascii 1.0
element vertex 4
property float x
property float y
property float z
property uchar red
property uchar green
property uchar blue
property uchar alpha
property ushort label
element face 2
property list uchar int vertex_indices
end_header
0 0 0 255 0 0 255 1
1 0 0 0 255 0 255 1
0 1 0 0 0 255 255 5
1 1 0.5 9 9 9 255 5
3 0 1 2
3 1 3 2
"""


def test_reads_an_ascii_mesh_with_extra_vertex_properties(tmp_path):
    path = tmp_path / "scene0000_00_vh_clean_2.labels.ply"
    path.write_text(SCANNET_STYLE)
    mesh = read_ply(path)
    assert mesh.points.dtype == np.float32 and mesh.points[3].tolist() == [1, 1, 0.5]
    assert mesh.colors[0].tolist() == [255, 0, 0] and mesh.colors.dtype == np.uint8
    assert mesh.faces.tolist() == [[0, 1, 2], [1, 3, 2]] and mesh.faces.dtype == np.int32
    assert mesh.vertex_properties["label"].tolist() == [1, 1, 5, 5]
    assert set(mesh.vertex_properties) == {"alpha", "label"}


@pytest.mark.parametrize(
    "text, message",
    [
        (SCANNET_STYLE.replace("property float z", "property float w"), "need x, y, z"),
        (SCANNET_STYLE.replace("3 1 3 2", "4 1 3 2 0"), "only triangle faces"),
        (SCANNET_STYLE.replace("3 1 3 2", "3 1 3 7"), "indexes vertex 7"),
        ("not a ply\n", "cannot read PLY"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.ply"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        read_ply(path)
    assert "bad.ply" in str(err.value)


def binary_ply(*lines: str, data: bytes) -> bytes:
    return "\n".join(["ply", "format binary_little_endian 1.0", *lines, "end_header\n"]).encode() + data


XYZ = ("element vertex 3", "property float x", "property float y", "property float z")
TRILLION = 10**12


@pytest.mark.parametrize(
    "data, message",
    [
        (  # plyfile allocates an element's rows before reading them
            SCANNET_STYLE.replace("element vertex 4", f"element vertex {TRILLION}").encode(),
            rf"element 'vertex' declares {TRILLION} rows of at least 16 bytes \({16 * TRILLION} bytes\), but only",
        ),
        (  # two lists: plyfile reads the faces row by row, into rows it allocated first
            binary_ply(
                *XYZ,
                f"element face {TRILLION}",
                "property list uchar int vertex_indices",
                "property list uchar float texcoord",
                data=bytes(36 + 10),
            ),
            rf"element 'face' declares {TRILLION} rows of at least 2 bytes .*after 36 for the elements before it",
        ),
        (  # a list of 2**32 - 1 bytes: plyfile asks for 4 GiB in one read
            binary_ply(
                *XYZ,
                "element face 1",
                "property list uint uchar vertex_indices",
                data=bytes(36) + struct.pack("<I", 2**32 - 1) + bytes(64),
            ),
            r"element 'face': row 0: property 'vertex_indices': early end-of-file",
        ),
    ],
    ids=["ascii-vertices", "binary-faces", "binary-list"],
)
def test_sizes_beyond_the_file_fail_naming_the_file_without_allocating_them(tmp_path, data, message):
    path = tmp_path / "huge.ply"
    path.write_bytes(data)
    peak, error = traced(lambda: read_ply(path), PlyError)
    assert re.search(rf"cannot read PLY '.*huge.ply': {message}", str(error)), error
    assert peak < 8 << 20, f"reading it allocated {peak >> 20} MiB"


def lists_ply(path, rng: np.random.Generator) -> None:
    """Faces with two lists, lengths as uint: plyfile reads them face by face, as long as each says."""
    vertex = np.array([tuple(p) for p in rng.normal(size=(20, 3))], dtype=[(a, "<f4") for a in "xyz"])
    face = np.empty(10, dtype=[("vertex_indices", "O"), ("texcoord", "O")])
    for f in range(10):
        face[f] = rng.integers(0, 20, 3).astype("<i4"), rng.random(6).astype("<f4")
    lengths = {"vertex_indices": "u4", "texcoord": "u4"}
    elements = [PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face", len_types=lengths)]
    PlyData(elements, text=False, byte_order="<").write(str(path))


@pytest.mark.filterwarnings("ignore:loadtxt:UserWarning")  # plyfile on an ascii list of no values
@pytest.mark.parametrize("binary", [False, True], ids=["ascii", "binary-lists"])
def test_damaged_ply_files_read_or_fail_with_a_ply_error_quickly_and_small(tmp_path, binary):
    path, rng = tmp_path / "fuzz.ply", np.random.default_rng(0)
    if binary:  # its vertices are memory-mapped, its faces read row by row
        lists_ply(path, rng)
    else:
        path.write_text(SCANNET_STYLE)
    data = path.read_bytes()
    header_end = data.index(b"end_header\n") + len(b"end_header\n")
    outcomes = fuzz(path, data, header_end, lambda: read_ply(path), PlyError, rng)
    assert outcomes["read"] > 0 and outcomes["PlyError"] > 100, outcomes  # most damage is fatal in so small a file


def test_query_file_names_are_safe_whatever_the_scene_id_and_text():
    from ovlift.query import file_part

    assert file_part("scene0000_00") == "scene0000_00"
    assert file_part("../../etc/passwd") == "etc_passwd"
    assert file_part("a soft chair?") == "a_soft_chair"
    assert "/" not in file_part("seq-01/frame 3") and file_part("seq-01/frame 3") == "seq-01_frame_3"
