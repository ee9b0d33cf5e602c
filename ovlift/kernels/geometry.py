"""Rigid transforms and depth back-projection (pure tensors)."""

from __future__ import annotations

import torch


def transform_points(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a (4, 4) rigid transform to (N, 3) points."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def pose_is_valid(cam_to_world: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """(T,) True where a (T, 4, 4) pose is finite, rigid (orthonormal rotation) and invertible.

    ScanNet marks lost tracking with -inf matrices; other sources write zeros.
    """
    finite = torch.isfinite(cam_to_world).flatten(1).all(dim=1)
    safe = torch.where(finite[:, None, None], cam_to_world, torch.eye(4, dtype=cam_to_world.dtype))
    rot = safe[:, :3, :3]
    eye = torch.eye(3, dtype=rot.dtype)
    orthonormal = ((rot @ rot.transpose(1, 2)) - eye).abs().flatten(1).amax(dim=1) < tol
    last_row = (safe[:, 3] - torch.tensor([0, 0, 0, 1], dtype=rot.dtype)).abs().amax(dim=1) < tol
    return finite & orthonormal & last_row & (torch.linalg.det(rot) > 0)


def rigid_poses(cam_to_world: torch.Tensor, tol: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 4, 4) poses made exactly rigid, and (T,) which passed ``pose_is_valid``.

    A valid pose's rotation becomes the nearest rotation (the polar factor U V^T of
    its SVD) and its last row exactly (0, 0, 0, 1); an invalid pose becomes NaN.
    Recorded poses drift off orthonormal (7-Scenes by 2.4e-4); building the cloud
    with one matrix and projecting with the inverse of another would disagree, so
    both use these.
    """
    valid = pose_is_valid(cam_to_world, tol)
    safe = torch.where(valid[:, None, None], cam_to_world, torch.eye(4, dtype=cam_to_world.dtype))
    u, _, vh = torch.linalg.svd(safe[:, :3, :3])
    rigid = torch.zeros_like(safe)
    rigid[:, :3, :3] = u @ vh  # det > 0 is part of validity, so no reflection to undo
    rigid[:, :3, 3] = safe[:, :3, 3]
    rigid[:, 3, 3] = 1
    return torch.where(valid[:, None, None], rigid, torch.full_like(rigid, float("nan"))), valid


def backproject_depth(
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    cam_to_world: torch.Tensor,
    min_depth: float = 0.0,
    max_depth: float = float("inf"),
) -> tuple[torch.Tensor, torch.Tensor]:
    """World points of every pixel with min_depth < depth <= max_depth.

    Returns the (M, 3) points and the (M,) flat pixel indices they came from.
    Pixel (row, col) is at image coordinates (x=col, y=row), as in projection.
    """
    height, width = depth.shape
    flat = depth.reshape(-1)
    index = torch.nonzero((flat > min_depth) & (flat <= max_depth), as_tuple=True)[0]
    z = flat[index].to(cam_to_world.dtype)
    rows = torch.div(index, width, rounding_mode="floor").to(z.dtype)
    cols = (index % width).to(z.dtype)
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    cam = torch.stack([(cols - cx) / fx * z, (rows - cy) / fy * z, z], dim=1)
    return transform_points(cam, cam_to_world), index
