"""Which 3D point sees which pixel: projection with the published visibility rules.

Rules (OpenScene's fusion scripts, as config):

* pixel = the projected coordinate rounded to the nearest integer (round half to
  even, as NumPy and torch round); pixel (row, col) sits at image coordinates
  (x=col, y=row);
* pixels within ``cut_bound`` of the border are excluded;
* with depth: visible when ``|depth(row, col) - z| <= tolerance``, where the
  tolerance is ``depth_tolerance * depth(row, col)`` (relative, OpenScene 0.25)
  or ``depth_tolerance`` metres (absolute, SAS 0.2 on ScanNet); depth 0 (invalid)
  never matches;
* without depth (LiDAR + cameras): only ``z > 0`` and the bounds count, unless
  ``zbuffer_px`` is set: then the points themselves are the depth image (each
  point with z > 0 inside the image writes its z over a square of
  ``2 * zbuffer_px + 1`` pixels, the nearest wins) and the same tolerance test
  runs against it, so a point behind a nearer point at its pixel is not paired
  (OpenScene has no such test on nuScenes: that is the default);
* with a separate depth camera (ScanNet: 640x480 depth beside 1296x968 colour;
  ``DepthCamera``): the pixel still comes from the colour camera, but the depth
  test runs in the depth camera - the point is projected into the depth image at
  its own resolution (rounded likewise, any pixel of the image, no border cut) and
  its depth-camera z is compared with the depth there;
* points behind the camera (z <= 0) never match; frames whose pose is invalid
  are skipped.

Arithmetic is float64 and elementwise in a fixed order, so results are exactly
reproducible against the per-point reference in the tests, on CPU and CUDA (on the
CPU the C++ loop of ``native.cpp`` does the same operations, without fused
multiply-add).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ovlift.kernels import native

ToleranceKind = Literal["relative", "absolute"]


@dataclass(frozen=True)
class VisibilityRule:
    depth_tolerance: float = 0.25
    """Relative: fraction of the measured depth. Absolute: metres."""
    tolerance_kind: ToleranceKind = "relative"
    cut_bound: int = 10
    """Border in pixels excluded on every side."""
    zbuffer_px: int | None = None
    """Without depth: occlusion test against a z-buffer of the points, each covering
    (2r+1)^2 pixels (None: no test)."""


@dataclass
class DepthCamera:
    """The depth image's own camera, for B frames (its depth is at the image's own size)."""

    world_to_depth: torch.Tensor
    """(B, 4, 4) world -> depth-camera coordinates."""
    intrinsics: torch.Tensor
    """(B, 3, 3) pinhole intrinsics in pixels of the depth image."""

    def select(self, frames: torch.Tensor | slice) -> DepthCamera:
        return DepthCamera(self.world_to_depth[frames], self.intrinsics[frames])


@dataclass
class Correspondences:
    """Point-frame-pixel triples, one per (point, frame) where the point is visible."""

    point_index: torch.Tensor
    """(M,) index into the points (int64 from the kernel; callers may compact it)."""
    frame_index: torch.Tensor
    """(M,) index into the frames given."""
    pixel: torch.Tensor
    """(M, 2) (row, col)."""

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> Correspondences:
        z = torch.zeros(0, dtype=torch.int64, device=device)
        return Correspondences(z, z.clone(), torch.zeros(0, 2, dtype=torch.int64, device=device))

    def __len__(self) -> int:
        return int(self.point_index.shape[0])

    @staticmethod
    def merge_by_point(parts: list[Correspondences], num_points: int) -> tuple[Correspondences, torch.Tensor]:
        """Merge frame-ordered parts into one array sorted by point, frames
        ascending within a point, and return it with the per-point counts.

        A counting sort: each part is placed straight at its final offsets and
        freed (``parts`` is emptied), so peak memory is about twice the
        correspondences rather than the four or five copies of cat + argsort.
        On the CPU ``native.place_by_point`` places a part in one pass.
        """
        counts = torch.zeros(num_points, dtype=torch.int64)
        for part in parts:
            counts += torch.bincount(part.point_index.to(torch.int64), minlength=num_points)
        cursor = torch.cumsum(counts, 0) - counts
        total = int(counts.sum())
        frame_dtype = parts[0].frame_index.dtype if parts else torch.int64
        pixel_dtype = parts[0].pixel.dtype if parts else torch.int64
        frame_out = torch.empty(total, dtype=frame_dtype)
        pixel_out = torch.empty(total, 2, dtype=pixel_dtype)
        while parts:
            part = parts.pop(0)
            if native.available("cpu"):
                native.place_by_point(cursor, part.point_index, part.frame_index, part.pixel, frame_out, pixel_out)
                continue
            point = part.point_index.to(torch.int64)
            ordered, order = torch.sort(point, stable=True)
            rank = torch.arange(len(ordered)) - torch.searchsorted(ordered, ordered)
            dest = cursor[ordered] + rank
            frame_out[dest] = part.frame_index[order]
            pixel_out[dest] = part.pixel[order]
            cursor += torch.bincount(point, minlength=num_points)
        _return_freed_memory()  # the parts', before the point index takes as much again
        # NumPy's repeat writes int32 directly (torch's goes through an int64 buffer of size M)
        point_index = torch.from_numpy(np.repeat(np.arange(num_points, dtype=np.int32), counts.numpy()))
        return Correspondences(point_index, frame_out, pixel_out), counts


def _return_freed_memory() -> None:
    """Hand the memory malloc keeps after frees back to the system (glibc's ``malloc_trim``; elsewhere
    nothing). Thousands of small parts freed one by one stay resident otherwise (measured on the
    7-Scenes benchmark: 310 MB, which the point index would have come on top of)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def scale_intrinsics(intrinsics: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """Intrinsics of an image resized from ``from_hw`` to ``to_hw`` (rows, cols).

    Half-pixel convention (as torch's ``interpolate(align_corners=False)`` and
    PIL resize map pixels): x' = (x + 0.5) * s - 0.5, so fx' = fx s and
    cx' = (cx + 0.5) s - 0.5. Works on (3, 3) or (..., 3, 3).
    """
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    out = intrinsics.clone()
    out[..., 0, 0] = intrinsics[..., 0, 0] * sx
    out[..., 0, 1] = intrinsics[..., 0, 1] * sx
    out[..., 0, 2] = (intrinsics[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 1] = intrinsics[..., 1, 1] * sy
    out[..., 1, 2] = (intrinsics[..., 1, 2] + 0.5) * sy - 0.5
    return out


def resize_depth(depth: torch.Tensor, to_hw: tuple[int, int]) -> torch.Tensor:
    """Nearest-pixel-centre resize of (T, H, W) depth (never blends valid with invalid)."""
    if tuple(depth.shape[-2:]) == tuple(to_hw):
        return depth
    return F.interpolate(depth[:, None], size=to_hw, mode="nearest-exact")[:, 0]


def rigid_inverse(cam_to_world: torch.Tensor) -> torch.Tensor:
    """World-to-camera of (..., 4, 4) rigid camera-to-world poses."""
    rot_t = cam_to_world[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(cam_to_world)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ cam_to_world[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1
    return out


def project_points(
    points: torch.Tensor, world_to_cam: torch.Tensor, intrinsics: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera z and continuous image coordinates (x, y) of (N, 3) points in B frames.

    Returns three (B, N) float64 tensors. Elementwise, in a fixed order:
    ``c = R p + t`` then ``x = fx * c_x / z + cx`` (and y likewise).
    """
    p = points.to(torch.float64)
    m = world_to_cam.to(torch.float64)
    k = intrinsics.to(torch.float64)
    px, py, pz = p[:, 0][None], p[:, 1][None], p[:, 2][None]

    def row(i: int) -> torch.Tensor:
        return m[:, i, 0:1] * px + m[:, i, 1:2] * py + m[:, i, 2:3] * pz + m[:, i, 3:4]

    cx_, cy_, z = row(0), row(1), row(2)
    x = k[:, 0, 0:1] * cx_ / z + k[:, 0, 2:3]
    y = k[:, 1, 1:2] * cy_ / z + k[:, 1, 2:3]
    return z, x, y


def visible_correspondences(
    points: torch.Tensor,
    world_to_cam: torch.Tensor,
    intrinsics: torch.Tensor,
    image_hw: tuple[int, int],
    rule: VisibilityRule,
    depth: torch.Tensor | None = None,
    pose_valid: torch.Tensor | None = None,
    depth_camera: DepthCamera | None = None,
) -> Correspondences:
    """Visible (point, frame, pixel) triples for a batch of B frames, sorted by point,
    frames ascending within a point.

    Args:
        points: (N, 3) world coordinates.
        world_to_cam, intrinsics: (B, 4, 4) and (B, 3, 3), intrinsics at ``image_hw``.
        depth: (B, H, W) metres at ``image_hw`` (0 = invalid), or None (no depth);
            with ``depth_camera``, (B, Hd, Wd) at the depth image's own size.
        pose_valid: (B,) bool; frames with False are skipped.
        depth_camera: the depth image's own camera, when it is not the colour camera.
    """
    keep = None
    if pose_valid is not None:
        keep = torch.nonzero(pose_valid, as_tuple=True)[0]
        if keep.numel() == 0:
            return Correspondences.empty(points.device)
        world_to_cam, intrinsics = world_to_cam[keep], intrinsics[keep]
        depth = depth[keep] if depth is not None else None
        depth_camera = depth_camera.select(keep) if depth_camera is not None else None
    visible = _visible_pairs_native if native.available(points.device) else _visible_pairs
    point, frame, pixel = visible(points, world_to_cam, intrinsics, image_hw, rule, depth, depth_camera)
    if keep is not None:
        frame = keep[frame]
    return Correspondences(point, frame, pixel)


def _visible_pairs_native(
    points: torch.Tensor,
    world_to_cam: torch.Tensor,
    intrinsics: torch.Tensor,
    image_hw: tuple[int, int],
    rule: VisibilityRule,
    depth: torch.Tensor | None,
    depth_camera: DepthCamera | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_visible_pairs`` by the C++ loop (the z-buffer, if any, made by torch ops first)."""
    if depth is None and rule.zbuffer_px is not None:
        z, x, y = project_points(points, world_to_cam, intrinsics)
        depth = points_zbuffer(z, torch.round(y), torch.round(x), image_hw, rule.zbuffer_px)
    camera = None if depth_camera is None else (depth_camera.world_to_depth, depth_camera.intrinsics)
    relative = rule.tolerance_kind == "relative"
    return native.visible_pairs(
        points, world_to_cam, intrinsics, image_hw, rule.cut_bound, depth, camera, rule.depth_tolerance, relative
    )


def _visible_pairs(
    points: torch.Tensor,
    world_to_cam: torch.Tensor,
    intrinsics: torch.Tensor,
    image_hw: tuple[int, int],
    rule: VisibilityRule,
    depth: torch.Tensor | None,
    depth_camera: DepthCamera | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The visible pairs' point, frame and (row, col), by point, frames ascending within a point,
    in torch ops (CUDA, or no C++ kernels)."""
    height, width = image_hw
    z, x, y = project_points(points, world_to_cam, intrinsics)
    col = torch.round(x)
    row = torch.round(y)
    cut = rule.cut_bound
    if depth is None and rule.zbuffer_px is not None:
        depth = points_zbuffer(z, row, col, image_hw, rule.zbuffer_px)
    mask = (z > 0) & (col >= cut) & (row >= cut) & (col < width - cut) & (row < height - cut)
    point, frame = torch.nonzero(mask.T, as_tuple=True)  # by point, then frame
    row_i = row[frame, point].to(torch.int64)
    col_i = col[frame, point].to(torch.int64)
    if depth is not None:
        ok = _depth_agrees(points, z, (frame, point, row_i, col_i), depth, depth_camera, rule)
        point, frame, row_i, col_i = point[ok], frame[ok], row_i[ok], col_i[ok]
    return point, frame, torch.stack([row_i, col_i], dim=1)


def _depth_agrees(
    points: torch.Tensor,
    z: torch.Tensor,
    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    depth: torch.Tensor,
    depth_camera: DepthCamera | None,
    rule: VisibilityRule,
) -> torch.Tensor:
    """Which of the (frame, point, row, col) ``pairs`` pass the depth test: the measured
    depth (at the pixel, or in the depth camera) is valid and within tolerance of z."""
    frame, point, row_i, col_i = pairs
    if depth_camera is not None:
        zp, d = _depth_camera_lookup(points, frame, point, depth, depth_camera)
    else:
        d = depth[frame, row_i, col_i].to(torch.float64)
        zp = z[frame, point]
    tolerance = rule.depth_tolerance * d if rule.tolerance_kind == "relative" else rule.depth_tolerance
    return (d > 0) & ((d - zp).abs() <= tolerance)


def _depth_camera_lookup(
    points: torch.Tensor, frame: torch.Tensor, point: torch.Tensor, depth: torch.Tensor, camera: DepthCamera
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth-camera z of each (frame, point) pair and the measured depth at its rounded
    depth-image pixel (0 where it falls outside the image or behind the depth camera)."""
    height, width = depth.shape[-2:]
    zd, xd, yd = project_points(points, camera.world_to_depth, camera.intrinsics)
    zd, col, row = zd[frame, point], torch.round(xd[frame, point]), torch.round(yd[frame, point])
    inside = (zd > 0) & (col >= 0) & (row >= 0) & (col < width) & (row < height)
    row_i = torch.where(inside, row, 0).to(torch.int64)
    col_i = torch.where(inside, col, 0).to(torch.int64)
    measured = depth[frame, row_i, col_i].to(torch.float64)
    return zd, torch.where(inside, measured, torch.zeros_like(measured))


def points_zbuffer(z: torch.Tensor, row: torch.Tensor, col: torch.Tensor, image_hw: tuple[int, int], radius: int):
    """(B, H, W) depth image of the points themselves: per pixel the least z of the points (z > 0,
    rounded pixel inside the image) whose (2 radius + 1)^2 square covers it; 0 where none does."""
    height, width = image_hw
    batch = z.shape[0]
    inside = (z > 0) & (col >= 0) & (row >= 0) & (col < width) & (row < height)
    frame, point = torch.nonzero(inside, as_tuple=True)
    flat = (frame * height + row[frame, point].long()) * width + col[frame, point].long()
    zbuf = torch.full((batch * height * width,), torch.inf, dtype=z.dtype, device=z.device)
    zbuf.scatter_reduce_(0, flat, z[frame, point], reduce="amin")
    zbuf = zbuf.view(batch, 1, height, width)
    if radius > 0:
        zbuf = -F.max_pool2d(-zbuf, 2 * radius + 1, stride=1, padding=radius)
    zbuf = zbuf[:, 0]
    return torch.where(torch.isfinite(zbuf), zbuf, torch.zeros_like(zbuf))
