"""PLY through plyfile: what we write reads back, and meshes as datasets ship them read."""

import numpy as np
import pytest

from ovlift.ply import read_ply, write_ply


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


def test_query_file_names_are_safe_whatever_the_scene_id_and_text():
    from ovlift.query import file_part

    assert file_part("scene0000_00") == "scene0000_00"
    assert file_part("../../etc/passwd") == "etc_passwd"
    assert file_part("a soft chair?") == "a_soft_chair"
    assert "/" not in file_part("seq-01/frame 3") and file_part("seq-01/frame 3") == "seq-01_frame_3"
