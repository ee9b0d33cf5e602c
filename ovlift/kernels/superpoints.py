"""Superpoints: ScanNet's segmentator (Felzenszwalb-Huttenlocher graph segmentation on
surface normals), on a mesh or on a k-nearest-neighbour graph of a bare point cloud.

The rule (ScanNet ``Segmentator/segmentator.cpp``):

* graph: the edges of the mesh's triangles; weight ``w = 1 - n_a . n_b``, squared
  when the edge is convex (see ``edge_weights``);
* visit edges by increasing weight; join the components of a and b when
  ``w <= threshold`` of both, then the joined component's threshold becomes
  ``w + k_threshold / size``; every vertex starts at ``k_threshold``;
* then, in the same edge order, join the two sides of every edge where either
  side has fewer than ``min_vertices`` vertices.

Where this differs from the C++, on purpose, so that results are exact and
reproducible: each undirected edge appears once (the C++ lists every face's three
edges, so an inner edge twice); ties in weight keep edge order (the C++'s
``std::sort`` leaves them unspecified); arithmetic is float64 (the C++'s float32);
vertex normals are area-weighted and unit (the C++ averages unit face normals and
does not renormalise, so its normals are shorter than 1 at creases).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.spatial import cKDTree


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(E, 2) int64 unique undirected pairs (lo, hi), lo < hi, lexicographic; self-pairs dropped."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    lo, hi = lo[keep], hi[keep]
    if len(lo) == 0:
        return np.zeros((0, 2), np.int64)
    span = int(hi.max()) + 1
    # np.sort of one int64 key is many times faster than np.unique on the pairs
    key = np.sort(lo * span + hi)
    key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    return np.stack([key // span, key % span], axis=1)


def _check_faces(faces: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces: expected (F, 3) vertex indices, got shape {faces.shape}")
    faces = faces.astype(np.int64, copy=False)
    if len(faces) and faces.min() < 0:
        raise ValueError(f"faces: vertex indices must be >= 0, got {faces.min()}")
    return faces


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) int64 unique edges of the triangles, (a, b) with a < b, lexicographic.

    A degenerate face's edge from a vertex to itself is dropped: it could never join
    anything.
    """
    faces = _check_faces(faces)
    return _unique_pairs(faces.ravel(), np.roll(faces, -1, axis=1).ravel())


def vertex_normals(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N, 3) float64 unit vertex normals: the sum of the cross products
    ``(v1 - v0) x (v2 - v0)`` of the faces around each vertex (so weighted by area),
    normalised. Counter-clockwise faces give normals on the side they are seen
    from. A vertex in no face, or only in faces of zero area, gets (0, 0, 0).
    """
    points = np.asarray(points, np.float64)
    faces = _check_faces(faces)
    num = len(points)
    if len(faces) and faces.max() >= num:
        raise ValueError(f"faces: index {faces.max()} is out of range for {num} points")
    x, y, z = (np.ascontiguousarray(points[:, c]) for c in range(3))
    f0, f1, f2 = (np.ascontiguousarray(faces[:, c]) for c in range(3))
    ax, ay, az = x[f1] - x[f0], y[f1] - y[f0], z[f1] - z[f0]
    bx, by, bz = x[f2] - x[f0], y[f2] - y[f0], z[f2] - z[f0]
    summed = np.empty((num, 3))
    for c, component in enumerate((ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx)):
        summed[:, c] = sum(np.bincount(corner, component, num) for corner in (f0, f1, f2))
    length = np.sqrt(np.einsum("ij,ij->i", summed, summed))[:, None]
    return np.divide(summed, length, out=np.zeros_like(summed), where=length > 0)


def knn_edges(points: np.ndarray, k: int = 8, max_distance_m: float | None = None) -> np.ndarray:
    """(E, 2) int64 unique undirected edges joining each point to its k nearest other
    points (an edge where either end is among the other's k nearest), (a, b) with
    a < b, lexicographic; with ``max_distance_m``, only neighbours within that distance.
    """
    points = np.asarray(points, np.float64)
    num = len(points)
    if num < 2 or k < 1:
        return np.zeros((0, 2), np.int64)
    count = min(k + 1, num)  # the point itself comes back too
    bound = np.inf if max_distance_m is None else np.nextafter(max_distance_m, np.inf)
    _, index = cKDTree(points).query(points, k=count, distance_upper_bound=bound, workers=-1)
    source = np.broadcast_to(np.arange(num)[:, None], index.shape)
    keep = index != source
    # with duplicate points, the point itself may not be first: then keep k others only
    keep[keep.all(axis=1), -1] = False
    keep &= index < num  # fewer than k within max_distance_m: scipy pads with index num
    return _unique_pairs(source[keep], index[keep])


def estimate_normals(points: np.ndarray, k: int = 16) -> np.ndarray:
    """(N, 3) float64 unit normals by PCA: the eigenvector of the smallest eigenvalue
    of the covariance of each point's k nearest points (itself included). The sign
    is arbitrary; use ``edge_weights(..., oriented=False)`` with these.
    """
    points = np.asarray(points, np.float64)
    num = len(points)
    normals = np.zeros((num, 3))
    if num == 0:
        return normals
    k = min(k, num)
    tree = cKDTree(points)
    chunk = 1 << 16  # bounds the (chunk, k, 3) neighbourhood array to a few tens of MB
    for start in range(0, num, chunk):
        query = points[start : start + chunk]
        _, index = tree.query(query, k=k, workers=-1)
        near = points[index.reshape(len(query), k)]
        centred = near - near.mean(axis=1, keepdims=True)
        covariance = np.einsum("nki,nkj->nij", centred, centred)
        normals[start : start + chunk] = np.linalg.eigh(covariance)[1][:, :, 0]
    return normals


def edge_weights(points: np.ndarray, normals: np.ndarray, edges: np.ndarray, oriented: bool = True) -> np.ndarray:
    """(E,) float64 ScanNet weights: ``w = 1 - n_a . n_b``, squared where the edge is
    convex, so that gentle convex bends split less than concave ones.

    Convex means ``n_b . (p_b - p_a) > 0``, the test of ScanNet's segmentator.cpp
    (``dot2 = n2 . (p2 - p1) / |p2 - p1|; if (dot2 > 0) ww = ww * ww;`` "convex
    regions"); only its sign matters, so the direction is not normalised here. With
    normals pointing out of the surface into free space (counter-clockwise faces seen
    from there), b's normal leaning away from a is a ridge: convex. A room's
    floor-wall fold is concave and keeps the full weight. b is the edge's larger
    index here; the C++ takes the order in which a face lists the edge (and an
    inner edge once per face); on a clean fold both ends give the same answer
    (``n_a . (p_a - p_b) > 0`` there too), on noise they may differ. An edge of zero
    length counts as concave (the C++ compares NaN > 0, also false).

    ``oriented=False`` is for normals of arbitrary sign (``estimate_normals``):
    ``w = 1 - |n_a . n_b|`` and never squared, because without a consistent outside
    the sign of ``n_b . (p_b - p_a)`` says nothing about convexity; every edge is
    treated as concave, the stricter of the two.
    """
    points = np.asarray(points, np.float64)
    normals = np.asarray(normals, np.float64)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    a, b = edges[:, 0], edges[:, 1]
    n_a, n_b = np.take(normals, a, axis=0), np.take(normals, b, axis=0)  # take: a third of the time of [a]
    cosine = np.einsum("ij,ij->i", n_a, n_b)
    if not oriented:
        return 1.0 - np.abs(cosine)
    weight = 1.0 - cosine
    convex = np.einsum("ij,ij->i", n_b, np.take(points, b, axis=0) - np.take(points, a, axis=0)) > 0
    weight[convex] *= weight[convex]
    return weight


def _stable_order(weights: np.ndarray) -> np.ndarray:
    """``np.argsort(weights, kind="stable")``, in half its time: the unstable
    (vectorised) argsort, then each run of equal weights put back in index order by
    sorting one int64 key (run, index)."""
    num = len(weights)
    if num < 2:
        return np.arange(num)
    order = np.argsort(weights)
    ordered = weights[order]
    run = np.zeros(num, np.int64)
    np.cumsum(ordered[1:] != ordered[:-1], out=run[1:])
    return np.sort(run * num + order) % num


@njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@njit(cache=True)
def _segment(
    num_vertices: int, a: np.ndarray, b: np.ndarray, weights: np.ndarray, k_threshold: float, min_vertices: int
) -> np.ndarray:
    """The union-find over edges (a[i], b[i]) already in visiting order."""
    parent = np.arange(num_vertices).astype(a.dtype)
    size = np.ones(num_vertices, np.int64)
    threshold = np.full(num_vertices, k_threshold)
    for i in range(len(a)):
        ra, rb, w = _find(parent, a[i]), _find(parent, b[i]), weights[i]
        if ra != rb and w <= threshold[ra] and w <= threshold[rb]:
            if size[ra] < size[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
            size[ra] += size[rb]
            threshold[ra] = w + k_threshold / size[ra]
    for i in range(len(a)):
        ra, rb = _find(parent, a[i]), _find(parent, b[i])
        if ra != rb and (size[ra] < min_vertices or size[rb] < min_vertices):
            if size[ra] < size[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
            size[ra] += size[rb]
    label = np.full(num_vertices, -1, np.int64)
    out = np.empty(num_vertices, np.int64)
    count = 0
    for v in range(num_vertices):
        root = _find(parent, v)
        if label[root] < 0:
            label[root] = count
            count += 1
        out[v] = label[root]
    return out


def segment_graph(
    num_vertices: int, edges: np.ndarray, weights: np.ndarray, k_threshold: float = 0.01, min_vertices: int = 20
) -> np.ndarray:
    """(N,) int64 segment per vertex, numbered 0..S-1 in order of each segment's
    smallest vertex, by ScanNet's rule (see the module docstring).

    Edges are visited in ``np.argsort(weights, kind="stable")`` order: ties by edge
    index. The outcome depends only on which sets exist, their sizes and thresholds,
    so the union-find's choice of roots cannot change it. A vertex on no edge stays a
    segment of its own whatever ``min_vertices`` says: nothing connects it.
    """
    edges = np.asarray(edges).reshape(-1, 2)
    weights = np.asarray(weights, np.float64).ravel()
    if len(weights) != len(edges):
        raise ValueError(f"weights: expected one per edge ({len(edges)}), got {len(weights)}")
    if len(edges) and (edges.min() < 0 or edges.max() >= num_vertices):
        raise ValueError(f"edges: vertex indices must lie in [0, {num_vertices}), got [{edges.min()}, {edges.max()}]")
    if not np.isfinite(weights).all():
        bad = np.count_nonzero(~np.isfinite(weights))
        raise ValueError(f"weights: expected finite values, {bad} are NaN or infinite (from NaN points or normals?)")
    order = _stable_order(weights)
    # gathered once here, the two passes read the edges in order; int32 halves the traffic
    index = np.int32 if num_vertices < 2**31 else np.int64
    ordered = np.take(edges, order, axis=0)  # edges[order] is several times slower
    a, b = ordered[:, 0].astype(index), ordered[:, 1].astype(index)
    return _segment(int(num_vertices), a, b, weights[order], float(k_threshold), int(min_vertices))


def superpoints(
    points: np.ndarray,
    faces: np.ndarray | None = None,
    k_threshold: float = 0.01,
    min_vertices: int = 20,
    knn: int = 8,
) -> np.ndarray:
    """(N,) int64 superpoint per point (``segment_graph``'s numbering).

    With faces: ScanNet's segmentator on the mesh (its edges, area-weighted vertex
    normals, oriented weights). Without: the ``knn``-nearest-neighbour graph with PCA
    normals (``estimate_normals``) and unoriented weights, for clouds with no mesh
    (LiDAR, fused RGB-D). Defaults are ScanNet's (SAS uses min_vertices 60). A
    vertex in no face is a superpoint of its own.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points: expected (N, 3), got shape {points.shape}")
    if faces is not None:
        edges = mesh_edges(faces)
        weights = edge_weights(points, vertex_normals(points, faces), edges)
    else:
        edges = knn_edges(points, knn)
        weights = edge_weights(points, estimate_normals(points), edges, oriented=False)
    return segment_graph(len(points), edges, weights, k_threshold, min_vertices)
