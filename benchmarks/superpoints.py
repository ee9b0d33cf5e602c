"""Benchmark: ScanNet's segmentator (superpoints) on a mesh of 1.5 M vertices.

The mesh is a bumpy, noisy height field (a 1225 x 1225 grid at 1 cm, two triangles
per cell, 0.5 mm of noise), about the vertex count of a large ScanNet scene. Each
phase of ``superpoints`` is timed on its own (best of ``--repeat``), then the whole.

Baseline, measured in the same run: the line-by-line Python port of segmentator.cpp
that the tests check against (``tests/test_superpoints.py``), on a small mesh of the
same kind, against ``segment_graph`` on the same edges and weights; the script checks
that both give the same segments.

    .venv/bin/python benchmarks/superpoints.py                       # ~1 min on 2 cores
    .venv/bin/python benchmarks/superpoints.py --size 400 --small 60   # quicker
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ovlift.kernels.superpoints import edge_weights, mesh_edges, segment_graph, superpoints, vertex_normals

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_superpoints import reference_segment_graph  # noqa: E402


def height_field(size: int, seed: int, spacing: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(size^2, 3) points and (2 (size-1)^2, 3) counter-clockwise faces (normals up)."""
    g = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    x, y = i * spacing, j * spacing
    z = 0.05 * np.sin(3 * x) * np.cos(2 * y) + 0.02 * np.sin(17 * x + 11 * y) + g.normal(0, 0.0005, x.shape)
    points = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    v = (i[:-1, :-1] * size + j[:-1, :-1]).ravel()
    faces = np.concatenate([np.stack([v, v + size, v + size + 1], 1), np.stack([v, v + size + 1, v + 1], 1)])
    return points, faces


def best_of(repeat: int, fn):
    """(result, best wall seconds) of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1225, help="grid side of the large mesh (vertices = size^2)")
    parser.add_argument("--small", type=int, default=300, help="grid side of the mesh the Python baseline runs on")
    parser.add_argument("--k-threshold", type=float, default=0.01)
    parser.add_argument("--min-vertices", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    k, min_vertices = args.k_threshold, args.min_vertices

    start = time.perf_counter()
    segment_graph(2, np.array([[0, 1]]), np.zeros(1))
    print(f"numba: compile or load from cache {time.perf_counter() - start:.2f} s (first call, not counted below)")

    points, faces = height_field(args.size, args.seed)
    print(f"mesh: {len(points):,} vertices, {len(faces):,} faces, k_threshold {k}, min_vertices {min_vertices}")
    edges, t_edges = best_of(args.repeat, lambda: mesh_edges(faces))
    normals, t_normals = best_of(args.repeat, lambda: vertex_normals(points, faces))
    weights, t_weights = best_of(args.repeat, lambda: edge_weights(points, normals, edges))
    segments, t_segment = best_of(args.repeat, lambda: segment_graph(len(points), edges, weights, k, min_vertices))
    whole, t_whole = best_of(args.repeat, lambda: superpoints(points, faces, k, min_vertices))
    assert np.array_equal(whole, segments)
    count = int(segments.max()) + 1
    phases = t_edges + t_normals + t_weights + t_segment
    print(f"  mesh_edges     {t_edges:6.2f} s  ({len(edges):,} edges)")
    print(f"  vertex_normals {t_normals:6.2f} s")
    print(f"  edge_weights   {t_weights:6.2f} s")
    print(f"  segment_graph  {t_segment:6.2f} s  (sort + union-find; {count:,} segments, mean {len(points) // count})")
    print(f"  superpoints    {t_whole:6.2f} s  (all of it in one call; the phases sum to {phases:.2f} s)")

    points, faces = height_field(args.small, args.seed + 1)
    edges = mesh_edges(faces)
    weights = edge_weights(points, vertex_normals(points, faces), edges)
    start = time.perf_counter()
    expected = reference_segment_graph(len(points), edges, weights, k, min_vertices)
    t_reference = time.perf_counter() - start
    got, t_fast = best_of(args.repeat, lambda: segment_graph(len(points), edges, weights, k, min_vertices))
    assert np.array_equal(got, expected), "segment_graph differs from the Python port of segmentator.cpp"
    print(
        f"small mesh: {len(points):,} vertices, {len(edges):,} edges, {int(got.max()) + 1} segments (identical): "
        f"Python port {t_reference:.3f} s, segment_graph {t_fast * 1e3:.2f} ms, ratio {t_reference / t_fast:.0f}x"
    )


if __name__ == "__main__":
    main()
