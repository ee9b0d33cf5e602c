"""The segmentator against a line-by-line Python port of ScanNet's segmentator.cpp on
random graphs, its geometry pieces against set and brute-force references and known
shapes, and superpoints that split where surfaces fold.

``reference_segment_graph`` is the one slow reference; benchmarks/superpoints.py
imports it from here.
"""

from __future__ import annotations

import numpy as np
import pytest

from ovlift.kernels.superpoints import (
    _stable_order,
    edge_weights,
    estimate_normals,
    knn_edges,
    mesh_edges,
    segment_graph,
    superpoints,
    vertex_normals,
)


class Universe:
    """segmentator.cpp's disjoint-set forest: union by rank; find compresses only
    the path of the vertex asked about."""

    def __init__(self, elements: int):
        self.rank = [0] * elements
        self.p = list(range(elements))
        self.size = [1] * elements

    def find(self, x: int) -> int:
        y = x
        while y != self.p[y]:
            y = self.p[y]
        self.p[x] = y
        return y

    def join(self, x: int, y: int) -> None:
        if self.rank[x] > self.rank[y]:
            self.p[y] = x
            self.size[x] += self.size[y]
        else:
            self.p[x] = y
            self.size[y] += self.size[x]
            if self.rank[x] == self.rank[y]:
                self.rank[y] += 1


def reference_segment_graph(
    num_vertices: int, edges: np.ndarray, weights: np.ndarray, c: float, seg_min_verts: int
) -> np.ndarray:
    """segment_graph() and the small-segment pass of segment() in segmentator.cpp, with
    ties in weight kept in edge order (std::sort leaves them unspecified) and the
    segments numbered by their smallest vertex."""
    order = np.argsort(weights, kind="stable")
    sorted_edges = [(float(weights[i]), int(edges[i, 0]), int(edges[i, 1])) for i in order]
    u = Universe(num_vertices)
    threshold = [c] * num_vertices
    for w, edge_a, edge_b in sorted_edges:
        a = u.find(edge_a)
        b = u.find(edge_b)
        if a != b:
            if w <= threshold[a] and w <= threshold[b]:
                u.join(a, b)
                a = u.find(a)
                threshold[a] = w + c / u.size[a]
    for _, edge_a, edge_b in sorted_edges:
        a = u.find(edge_a)
        b = u.find(edge_b)
        if a != b and (u.size[a] < seg_min_verts or u.size[b] < seg_min_verts):
            u.join(a, b)
    labels: dict[int, int] = {}
    return np.array([labels.setdefault(u.find(v), len(labels)) for v in range(num_vertices)], np.int64)


def grid_mesh(height: int, width: int, spacing: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """A flat height x width grid in z = 0, two counter-clockwise triangles per cell
    (normals +z)."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    points = np.stack([i * spacing, j * spacing, np.zeros(i.shape)], axis=-1).reshape(-1, 3)
    v = (i[:-1, :-1] * width + j[:-1, :-1]).ravel()
    faces = np.concatenate([np.stack([v, v + width, v + width + 1], 1), np.stack([v, v + width + 1, v + 1], 1)])
    return points, faces


def random_graph(seed: int) -> tuple[int, np.ndarray, np.ndarray, float, int]:
    """A perturbed grid, a triangle soup with random normals, or either with weights
    quantised to a few values (ties, and weights equal to thresholds)."""
    g = np.random.default_rng(seed)
    kind = seed % 3
    if kind == 0:
        points, faces = grid_mesh(int(g.integers(5, 25)), int(g.integers(5, 25)))
        points[:, 2] = g.normal(0, 10 ** g.uniform(-4, -2), len(points))
        flip = g.random(len(faces)) < 0.1  # some faces wound the other way: normals that partly cancel
        faces[flip] = faces[flip][:, [0, 2, 1]]
        normals = vertex_normals(points, faces)
    else:
        num = int(g.integers(50, 400))
        points = g.normal(size=(num, 3))
        faces = np.stack([g.choice(num, 3, replace=False) for _ in range(int(g.integers(num, 3 * num)))])
        normals = g.normal(size=(num, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    edges = mesh_edges(faces)
    weights = edge_weights(points, normals, edges, oriented=bool(g.random() < 0.7))
    if kind == 2 or g.random() < 0.2:
        weights = g.integers(0, 5, len(edges)) * 0.005
    num_vertices = len(points) + int(g.integers(0, 4))  # some vertices on no edge
    k = float(g.choice([0.001, 0.01, 0.05, 0.3, 2.0]))
    return num_vertices, edges, weights, k, int(g.choice([0, 1, 5, 20, 60]))


@pytest.mark.parametrize("seed", range(48))
def test_segment_graph_matches_the_published_algorithm(seed):
    num_vertices, edges, weights, k, min_vertices = random_graph(seed)
    expected = reference_segment_graph(num_vertices, edges, weights, k, min_vertices)
    got = segment_graph(num_vertices, edges, weights, k, min_vertices)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_the_sort_keeps_ties_in_edge_order():
    g = np.random.default_rng(0)
    for weights in (g.integers(0, 4, 5000) * 0.25, g.random(3000), np.array([0.0, -0.0, 0.0]), np.ones(1)):
        np.testing.assert_array_equal(_stable_order(weights), np.argsort(weights, kind="stable"))


def test_segment_graph_on_empty_and_bad_inputs():
    none = np.zeros((0, 2), np.int64)
    assert segment_graph(0, none, np.zeros(0)).shape == (0,)
    np.testing.assert_array_equal(segment_graph(4, none, np.zeros(0)), np.arange(4))
    with pytest.raises(ValueError, match=r"edges: vertex indices must lie in \[0, 3\)"):
        segment_graph(3, np.array([[0, 3]]), np.zeros(1))
    with pytest.raises(ValueError, match="weights: expected one per edge"):
        segment_graph(3, np.array([[0, 1]]), np.zeros(2))
    with pytest.raises(ValueError, match="weights: expected finite"):
        segment_graph(3, np.array([[0, 1]]), np.array([np.nan]))


def test_mesh_edges_are_the_unique_sorted_triangle_sides():
    g = np.random.default_rng(1)
    faces = g.integers(0, 60, size=(200, 3))  # some faces repeat a vertex
    expected = sorted({(min(a, b), max(a, b)) for f in faces.tolist() for a, b in zip(f, f[1:] + f[:1]) if a != b})
    edges = mesh_edges(faces)
    assert edges.dtype == np.int64
    assert edges.tolist() == [list(e) for e in expected]
    assert mesh_edges(np.zeros((0, 3), np.int32)).shape == (0, 2)


def test_vertex_normals_on_known_shapes():
    points, faces = grid_mesh(6, 7)
    np.testing.assert_allclose(vertex_normals(points, faces), np.tile([0.0, 0.0, 1.0], (42, 1)))
    np.testing.assert_allclose(vertex_normals(points, faces[:, ::-1]), np.tile([0.0, 0.0, -1.0], (42, 1)))

    # a regular octahedron: each vertex sits among four equal faces, its normal points out
    octahedron = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    faces = []
    for x in (0, 1):
        for y in (2, 3):
            for z in (4, 5):
                f = [x, y, z]
                if np.linalg.det(octahedron[f]) < 0:
                    f = [x, z, y]
                faces.append(f)
    np.testing.assert_allclose(vertex_normals(octahedron, np.array(faces)), octahedron, atol=1e-12)

    # area weights: a triangle of area 2 in z = 0 and one of area 1/2 in y = 0 share vertex 0;
    # vertex 5 is in no face
    points = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 1], [1, 0, 0], [9, 9, 9]], float)
    normals = vertex_normals(points, np.array([[0, 1, 2], [0, 4, 3]]))
    np.testing.assert_allclose(normals[0], np.array([0, -1, 4]) / np.sqrt(17))
    np.testing.assert_allclose(normals[1], [0, 0, 1])
    np.testing.assert_allclose(normals[3], [0, -1, 0])
    np.testing.assert_array_equal(normals[5], [0, 0, 0])


def hinge(height: float) -> tuple[np.ndarray, np.ndarray]:
    """Two triangles, counter-clockwise from above, on the hinge 2-3 along x; wings 0
    (y = -1) and 1 (y = +1) at z = height: a valley when height > 0, a ridge when < 0."""
    points = np.array([[0.5, -1, height], [0.5, 1, height], [0, 0, 0], [1, 0, 0]], float)
    return points, np.array([[2, 0, 3], [2, 3, 1]])


def test_edge_weights_square_convex_edges_only():
    slope = 0.4
    cosine = 1 / np.sqrt(1 + slope**2)  # between a wing's normal and the hinge's (+z)
    for height, expected_wing in ((slope, 1 - cosine), (-slope, (1 - cosine) ** 2)):
        points, faces = hinge(height)
        normals = vertex_normals(points, faces)
        np.testing.assert_allclose(normals[2:], [[0, 0, 1], [0, 0, 1]], atol=1e-12)
        edges = mesh_edges(faces)
        assert edges.tolist() == [[0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
        weights = edge_weights(points, normals, edges)
        np.testing.assert_allclose(weights, [expected_wing] * 4 + [0], atol=1e-12)
        # unoriented: never squared, and blind to the normals' signs
        flipped = normals * np.array([1, -1, 1, -1])[:, None]
        np.testing.assert_allclose(edge_weights(points, flipped, edges, oriented=False), [1 - cosine] * 4 + [0])


def l_shape(length: int, depth: int, spacing: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A floor (z = 0, y > 0) and a wall (y = 0, z > 0) welded along the x axis, one
    grid folded along its middle row, normals into the room (+z, +y). Returns the
    points, faces and a side per vertex (0 floor, 1 wall, -1 on the fold)."""
    points, faces = grid_mesh(length, 2 * depth + 1, spacing)
    v = points[:, 1] / spacing - depth  # < 0 floor, > 0 wall
    points[:, 1] = np.where(v < 0, -v, 0) * spacing
    points[:, 2] = np.where(v > 0, v, 0) * spacing
    side = np.where(v < 0, 0, np.where(v > 0, 1, -1))
    if vertex_normals(points, faces)[0, 2] < 0:
        faces = faces[:, ::-1]
    return points, faces, side


def test_a_folded_mesh_splits_into_its_two_planes():
    points, faces, side = l_shape(length=15, depth=14)  # fold rows of 15 < 20 vertices, merged away
    normals = vertex_normals(points, faces)
    np.testing.assert_allclose(normals[side == 0], np.tile([0, 0, 1.0], (210, 1)), atol=1e-12)
    np.testing.assert_allclose(normals[side == 1], np.tile([0, 1.0, 0], (210, 1)), atol=1e-12)
    segments = superpoints(points, faces)
    assert len(np.unique(segments)) == 2
    assert len(np.unique(segments[side == 0])) == 1 and len(np.unique(segments[side == 1])) == 1
    assert segments[side == 0][0] != segments[side == 1][0]


def test_a_flat_grid_is_one_segment():
    points, faces = grid_mesh(20, 20)
    points[:, :2] += np.random.default_rng(2).uniform(-0.003, 0.003, (400, 2))  # in-plane jitter
    np.testing.assert_array_equal(superpoints(points, faces, min_vertices=20), np.zeros(400))


def test_superpoints_on_empty_inputs_and_unused_vertices():
    assert superpoints(np.zeros((0, 3))).shape == (0,)
    assert superpoints(np.zeros((0, 3)), np.zeros((0, 3), np.int64)).shape == (0,)
    points, faces = grid_mesh(20, 20)
    points = np.concatenate([points, [[5, 5, 5], [6, 6, 6]]])  # two vertices in no face
    segments = superpoints(points, faces)
    np.testing.assert_array_equal(segments, np.r_[np.zeros(400), 1, 2])
    with pytest.raises(ValueError, match=r"points: expected \(N, 3\)"):
        superpoints(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="faces: index 400 is out of range for 400 points"):
        vertex_normals(points[:400], np.array([[0, 1, 400]]))


def test_knn_edges_match_brute_force():
    g = np.random.default_rng(3)
    points = g.random((200, 3))
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    nearest = np.argsort(distance, axis=1)[:, :5]
    for bound in (None, 0.15):
        expected = {
            (min(i, j), max(i, j)) for i in range(200) for j in nearest[i] if bound is None or distance[i, j] <= bound
        }
        assert knn_edges(points, 5, bound).tolist() == [list(e) for e in sorted(expected)]
    assert knn_edges(points[:1], 5).shape == (0, 2)
    assert knn_edges(points[:3], 5).tolist() == [[0, 1], [0, 2], [1, 2]]


def test_estimate_normals_are_the_surface_normals():
    g = np.random.default_rng(4)
    plane_normal = np.array([1.0, 2.0, 2.0]) / 3
    basis = np.linalg.svd(plane_normal[None])[2][1:]  # two directions in the plane
    plane = g.normal(size=(300, 2)) @ basis
    assert np.abs(estimate_normals(plane) @ plane_normal).min() > 1 - 1e-9
    sphere = g.normal(size=(2000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    assert np.abs(np.einsum("ij,ij->i", estimate_normals(sphere, k=8), sphere)).min() > 0.97


def test_a_cloud_on_two_planes_splits_along_the_fold():
    g = np.random.default_rng(5)
    floor = np.c_[g.random(1500), g.random(1500), np.zeros(1500)]
    wall = np.c_[g.random(1500), np.zeros(1500), g.random(1500)]
    points = np.concatenate([floor, wall])
    side = np.r_[np.zeros(1500, int), np.ones(1500, int)]
    segments = superpoints(points)
    counts = np.zeros((segments.max() + 1, 2))
    np.add.at(counts, (segments, side), 1)
    assert counts.max(axis=1).sum() / len(points) >= 0.95  # purity
    assert np.sort(counts.sum(axis=1))[-2:].sum() >= 0.9 * len(points)  # two big segments, one per plane
    assert set(counts[np.argsort(counts.sum(axis=1))[-2:]].argmax(axis=1)) == {0, 1}
