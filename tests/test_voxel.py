"""Voxel kernels against per-point Python references on random clouds."""

import numpy as np
import pytest
import torch

from ovlift.kernels.voxel import voxel_downsample, voxelize


def reference_voxels(points: np.ndarray, size: float) -> tuple[list[tuple], list[int]]:
    cells = [tuple(int(c) for c in np.floor(p / size)) for p in points]
    lo = tuple(min(c[i] for c in cells) for i in range(3))
    shifted = [tuple(c[i] - lo[i] for i in range(3)) for c in cells]
    voxels = sorted(set(shifted))
    index = {v: i for i, v in enumerate(voxels)}
    return voxels, [index[c] for c in shifted]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voxelize_matches_reference(seed):
    g = np.random.default_rng(seed)
    points = (g.normal(size=(800, 3)) * [2.0, 1.0, 0.5] + [-3, 4, 1]).astype(np.float32)
    voxels, point_to_voxel = voxelize(torch.from_numpy(points), 0.3)
    ref_voxels, ref_map = reference_voxels(points, 0.3)
    assert [tuple(v) for v in voxels.tolist()] == ref_voxels
    assert point_to_voxel.tolist() == ref_map


def test_voxel_downsample_means_match_reference():
    g = np.random.default_rng(5)
    points = g.uniform(-1, 1, size=(500, 3))
    colors = g.uniform(0, 255, size=(500, 3))
    centroids, (mean_colors,), counts = voxel_downsample(torch.from_numpy(points), 0.25, torch.from_numpy(colors))
    ref_voxels, ref_map = reference_voxels(points, 0.25)
    ref_map = np.array(ref_map)
    for v in range(len(ref_voxels)):
        members = ref_map == v
        assert counts[v] == members.sum()
        np.testing.assert_allclose(centroids[v].numpy(), points[members].mean(0))
        np.testing.assert_allclose(mean_colors[v].numpy(), colors[members].mean(0))
