"""Exact ray casting against axis-aligned boxes (the toy scenes' geometry).

Toy scenes are built from axis-aligned boxes: solid furniture parts seen from
outside and one room box seen from inside. The slab method gives the exact first
hit, so rendered depth and visibility are ground truth, not approximations.
"""

from __future__ import annotations

import torch

ROOM_FACES = 6
"""Room faces are reported as hit index ``B + f``, f in (-x, +x, -y, +y, -z, +z)."""


def cast_rays(
    origins: torch.Tensor,
    directions: torch.Tensor,
    box_min: torch.Tensor,
    box_max: torch.Tensor,
    room_min: torch.Tensor,
    room_max: torch.Tensor,
    chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First hit of each ray with the solid boxes or the inside of the room.

    Args:
        origins, directions: (R, 3) rays ``o + t d``, origins inside the room and
            outside every box; ``d`` need not be normalised (``t`` is in its units).
        box_min, box_max: (B, 3) solid boxes.
        room_min, room_max: (3,) the room's interior.

    Returns:
        t: (R,) ray parameter of the first hit.
        hit: (R,) box index in [0, B), or ``B + face`` for a room face.
        normal: (R, 3) unit normal of the hit face, pointing towards the ray origin side.
    """
    num_boxes = box_min.shape[0]
    t_out = torch.empty(origins.shape[0], dtype=origins.dtype, device=origins.device)
    hit_out = torch.empty(origins.shape[0], dtype=torch.long, device=origins.device)
    normal_out = torch.zeros_like(origins)
    axis_sign = torch.tensor([-1.0, 1.0], dtype=origins.dtype, device=origins.device)
    for start in range(0, origins.shape[0], chunk):
        o = origins[start : start + chunk]
        d = directions[start : start + chunk]
        inv = 1.0 / d  # +-inf on axis-parallel rays: the slab test stays exact
        # Room: the ray leaves the interior at the smallest exit over axes.
        t_lo = (room_min - o) * inv
        t_hi = (room_max - o) * inv
        exit_per_axis = torch.maximum(t_lo, t_hi)
        t_room, room_axis = exit_per_axis.min(dim=1)
        room_side = (t_hi.gather(1, room_axis[:, None])[:, 0] == t_room).long()  # 1 = max side
        t_best = t_room
        hit = num_boxes + 2 * room_axis + room_side
        normal = torch.zeros_like(o)
        # The room is seen from inside: its normal points inwards.
        normal.scatter_(1, room_axis[:, None], -axis_sign[room_side][:, None])
        if num_boxes:
            b_lo = (box_min[None] - o[:, None]) * inv[:, None]
            b_hi = (box_max[None] - o[:, None]) * inv[:, None]
            near = torch.minimum(b_lo, b_hi)
            far = torch.maximum(b_lo, b_hi)
            t_near, near_axis = near.max(dim=2)
            t_far = far.min(dim=2).values
            valid = (t_near <= t_far) & (t_near > 0)
            t_near = torch.where(valid, t_near, torch.full_like(t_near, float("inf")))
            t_box, box = t_near.min(dim=1)
            closer = t_box < t_best
            axis = near_axis.gather(1, box[:, None])[:, 0]
            # Entering through the min side of an axis when moving in +d there.
            d_axis = d.gather(1, axis[:, None])[:, 0]
            box_normal = torch.zeros_like(o)
            box_normal.scatter_(1, axis[:, None], torch.where(d_axis > 0, -1.0, 1.0).to(o.dtype)[:, None])
            t_best = torch.where(closer, t_box, t_best)
            hit = torch.where(closer, box, hit)
            normal = torch.where(closer[:, None], box_normal, normal)
        t_out[start : start + chunk] = t_best
        hit_out[start : start + chunk] = hit
        normal_out[start : start + chunk] = normal
    return t_out, hit_out, normal_out


def pixel_rays(
    intrinsics: torch.Tensor, cam_to_world: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel (row-major), scaled so that ``t`` is the z-depth.

    A pixel (row, col) sits at image coordinates (x=col, y=row): projections are
    rounded to the nearest pixel, as OpenScene does, so pixel centres are integers.
    """
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=cam_to_world.dtype, device=cam_to_world.device),
        torch.arange(width, dtype=cam_to_world.dtype, device=cam_to_world.device),
        indexing="ij",
    )
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    d_cam = torch.stack([(cols - cx) / fx, (rows - cy) / fy, torch.ones_like(rows)], dim=-1).reshape(-1, 3)
    directions = d_cam @ cam_to_world[:3, :3].T
    origins = cam_to_world[:3, 3].expand_as(directions)
    return origins, directions
