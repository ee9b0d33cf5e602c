"""Voxel grids: downsampling and point-to-voxel maps (pure tensors)."""

from __future__ import annotations

import torch

from ovlift.kernels.scatter import scatter_add


def voxel_keys(points: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer voxel coordinates (N, 3), shifted to start at 0, and one int64 key per
    point (equal key = same voxel; key order = lexicographic order of the coordinates)."""
    coords = torch.floor(points / voxel_size).to(torch.int64)
    shifted = coords - coords.min(dim=0).values
    span = shifted.max(dim=0).values + 1
    key = (shifted[:, 0] * span[1] + shifted[:, 1]) * span[2] + shifted[:, 2]
    return shifted, key


def voxel_downsample(
    points: torch.Tensor, voxel_size: float, *features: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Mean point (and mean of each feature tensor) per occupied voxel.

    Returns (centroids (M, 3), [mean features (M, ...)], counts (M,)); voxels are in
    ascending key order, so the result is deterministic.
    """
    if points.shape[0] == 0:
        return points, [f[:0] for f in features], torch.zeros(0, dtype=torch.int64)
    _, key = voxel_keys(points, voxel_size)
    _, inverse = torch.unique(key, return_inverse=True)
    num = int(inverse.max()) + 1
    counts = torch.bincount(inverse, minlength=num)

    def mean(values: torch.Tensor) -> torch.Tensor:
        summed = scatter_add(values.to(torch.float64), inverse, dim=0, dim_size=num)
        shape = (-1,) + (1,) * (values.dim() - 1)
        return summed / counts.reshape(shape)

    return mean(points).to(points.dtype), [mean(f) for f in features], counts


def voxelize(points: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Occupied voxels of (N, 3) points: integer coordinates (V, 3), shifted to start
    at 0, in ascending key order, and the (N,) point-to-voxel map (the voxel-to-point
    map is gathering with it: ``voxel_values[point_to_voxel]``)."""
    coords, key = voxel_keys(points, voxel_size)
    unique_key, point_to_voxel = torch.unique(key, return_inverse=True)
    first = torch.full((len(unique_key),), len(key), dtype=torch.int64, device=points.device)
    first.scatter_reduce_(0, point_to_voxel, torch.arange(len(key), device=points.device), reduce="amin")
    return coords[first], point_to_voxel
