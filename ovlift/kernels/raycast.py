"""Exact ray casting against axis-aligned boxes and cylinders (the toy scenes' geometry).

Toy scenes are built from solid parts seen from outside - axis-aligned boxes, and
cylinders whose axis is a coordinate axis - and one room box seen from inside. A
cylinder is given by its bounding box and its axis: it is the cylinder inscribed
in that box (whose cross-section is square). The slab method gives the exact
first hit of a box; a cylinder's is where the ray is first both between the caps
(a slab on the axis) and within the radius (a quadratic in t). Rendered depth and
visibility are ground truth, not approximations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ROOM_FACES = 6
"""Room faces are reported as hit index ``P + f``, f in (-x, +x, -y, +y, -z, +z)."""

BOX = -1
"""``part_axis`` of a box (a cylinder's is its axis: 0, 1 or 2)."""


def cast_rays(
    origins: torch.Tensor,
    directions: torch.Tensor,
    part_min: torch.Tensor,
    part_max: torch.Tensor,
    room_min: torch.Tensor,
    room_max: torch.Tensor,
    part_axis: torch.Tensor | None = None,
    block: int = 1 << 17,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First hit of each ray with the solid parts or the inside of the room.

    Args:
        origins, directions: (R, 3) rays ``o + t d``, origins inside the room and
            outside every part; ``d`` need not be normalised (``t`` is in its units).
        part_min, part_max: (P, 3) bounding boxes of the solid parts.
        room_min, room_max: (3,) the room's interior.
        part_axis: (P,) ``BOX`` (-1) for a box, else the axis (0, 1, 2) of the
            cylinder inscribed in the part's box; None: every part is a box.
        block: rays x parts tested at once (bounds memory; larger blocks make
            fewer, longer tensor operations).

    Returns:
        t: (R,) ray parameter of the first hit.
        hit: (R,) part index in [0, P), or ``P + face`` for a room face.
        normal: (R, 3) unit normal of the surface hit, pointing towards the ray origin side.
    """
    num_parts = part_min.shape[0]
    if part_axis is None:
        part_axis = torch.full((num_parts,), BOX, dtype=torch.long, device=origins.device)
    inv = 1.0 / directions  # +-inf on axis-parallel rays: the slab test stays exact
    best = _room_exits(origins, inv, room_min, room_max, num_parts)
    for index, first_entry in (
        (torch.nonzero(part_axis == BOX, as_tuple=True)[0], _box_entries),
        (torch.nonzero(part_axis != BOX, as_tuple=True)[0], _cylinder_entries),
    ):
        if len(index):
            parts = (part_min[index], part_max[index], part_axis[index])
            _keep_nearer(best, (origins, directions, inv), index, first_entry, parts, block)
    return best


def _room_exits(
    origins: torch.Tensor, inv: torch.Tensor, room_min: torch.Tensor, room_max: torch.Tensor, num_parts: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each ray leaves the room: t, hit ``num_parts + face``, inward normal."""
    # The ray leaves the interior at the smallest exit over axes.
    t_lo = (room_min - origins) * inv
    t_hi = (room_max - origins) * inv
    t_best, room_axis = torch.maximum(t_lo, t_hi).min(dim=1)
    room_side = (t_hi.gather(1, room_axis[:, None])[:, 0] == t_best).long()  # 1 = max side
    hit = num_parts + 2 * room_axis + room_side
    normal = torch.zeros_like(origins)
    # The room is seen from inside: its normal points inwards.
    axis_sign = torch.tensor([-1.0, 1.0], dtype=origins.dtype, device=origins.device)
    normal.scatter_(1, room_axis[:, None], -axis_sign[room_side][:, None])
    return t_best, hit, normal


FirstEntry = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""``_box_entries`` or ``_cylinder_entries``: (o, d, inv, lo, hi, axis) -> (t, which, normal)."""


def _keep_nearer(
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rays: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    index: torch.Tensor,
    first_entry: FirstEntry,
    parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    block: int,
) -> None:
    """Update ``best`` (t, hit, normal) in place where a ray enters one of the parts
    ``index`` (``parts``: their lo, hi, axis) before its hit so far; ``block`` rays x parts at once."""
    t_best, hit, normal = best
    origins, directions, inv = rays
    rows = max(1, block // len(index))
    for start in range(0, origins.shape[0], rows):
        ray = slice(start, start + rows)
        t_part, which, part_normal = first_entry(origins[ray], directions[ray], inv[ray], *parts)
        closer = t_part < t_best[ray]
        t_best[ray] = torch.where(closer, t_part, t_best[ray])
        hit[ray] = torch.where(closer, index[which], hit[ray])
        normal[ray] = torch.where(closer[:, None], part_normal, normal[ray])


def cylinder_radius(lo: torch.Tensor, hi: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Radius of the cylinder inscribed in each box ``lo``-``hi`` along ``axis``: the mean
    half-width of the box's (square) cross-section."""
    size = hi - lo
    return (size.gather(1, ((axis + 1) % 3)[:, None]) + size.gather(1, ((axis + 2) % 3)[:, None]))[:, 0] / 4


def _box_entries(
    o: torch.Tensor, d: torch.Tensor, inv: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, axis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each ray's first entry into the (B,) boxes: t (inf if none), which box, outward normal."""
    b_lo = (lo[None] - o[:, None]) * inv[:, None]
    b_hi = (hi[None] - o[:, None]) * inv[:, None]
    near = torch.minimum(b_lo, b_hi)
    far = torch.maximum(b_lo, b_hi)
    t_near, near_axis = near.max(dim=2)
    t_far = far.min(dim=2).values
    valid = (t_near <= t_far) & (t_near > 0)
    t_near = torch.where(valid, t_near, torch.full_like(t_near, float("inf")))
    t_box, box = t_near.min(dim=1)
    hit_axis = near_axis.gather(1, box[:, None])
    # Entering through the min side of an axis when moving in +d there.
    d_axis = d.gather(1, hit_axis)
    normal = torch.zeros_like(o)
    normal.scatter_(1, hit_axis, torch.where(d_axis > 0, -1.0, 1.0).to(o.dtype))
    return t_box, box, normal


def _cylinder_entries(
    o: torch.Tensor, d: torch.Tensor, inv: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, axis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each ray's first entry into the (C,) capped cylinders inscribed in the boxes
    ``lo``-``hi`` along ``axis``: t (inf if none), which cylinder, outward normal.

    Inside the solid the ray is both between the caps (the slab on the axis) and
    within the radius of the axis; it enters at the later of the two entries,
    through a cap or through the round side.
    """
    u, v = (axis + 1) % 3, (axis + 2) % 3  # the cross-section's axes
    centre_u = (lo.gather(1, u[:, None]) + hi.gather(1, u[:, None]))[:, 0] / 2
    centre_v = (lo.gather(1, v[:, None]) + hi.gather(1, v[:, None]))[:, 0] / 2
    radius = cylinder_radius(lo, hi, axis)
    # (R, C): |p + t d|^2 = r^2 in the cross-section, p relative to the axis. A ray
    # parallel to the axis (a = 0) gets a tiny a: within the radius (c <= 0) it is
    # inside from -inf to inf, else nowhere. A ray that misses the round side has
    # disc < 0 and NaN roots, and no comparison with NaN holds: no entry.
    pu, pv = o.index_select(1, u) - centre_u, o.index_select(1, v) - centre_v
    du, dv = d.index_select(1, u), d.index_select(1, v)
    a = (du * du + dv * dv).clamp_min(1e-30)
    b = pu * du + pv * dv  # half the linear coefficient
    c = pu * pu + pv * pv - radius * radius
    # Roots without cancellation: q = -(b + sign(b) sqrt(disc)), t = q / a and c / q.
    q = -(b + torch.copysign(torch.sqrt(b * b - a * c), b))
    t1, t2 = q / a, c / q
    o_axis, inv_axis = o.index_select(1, axis), inv.index_select(1, axis)
    cap_lo = (lo.gather(1, axis[:, None])[:, 0] - o_axis) * inv_axis
    cap_hi = (hi.gather(1, axis[:, None])[:, 0] - o_axis) * inv_axis
    side_in, cap_in = torch.minimum(t1, t2), torch.minimum(cap_lo, cap_hi)
    t_near = torch.maximum(side_in, cap_in)
    valid = (t_near <= torch.minimum(torch.maximum(t1, t2), torch.maximum(cap_lo, cap_hi))) & (t_near > 0)
    inf = torch.full_like(t_near, float("inf"))
    t_cyl, cyl = torch.where(valid, t_near, inf).min(dim=1)
    # The normal of the surface entered: radial on the side, along the axis on a cap.
    chosen = cyl[:, None]
    through_side = side_in.gather(1, chosen)[:, 0] >= cap_in.gather(1, chosen)[:, 0]
    t_hit = torch.where(torch.isfinite(t_cyl), t_cyl, torch.zeros_like(t_cyl))
    radial_u = (pu.gather(1, chosen)[:, 0] + t_hit * du.gather(1, chosen)[:, 0]) / radius[cyl]
    radial_v = (pv.gather(1, chosen)[:, 0] + t_hit * dv.gather(1, chosen)[:, 0]) / radius[cyl]
    along = torch.where(d.gather(1, axis[cyl, None])[:, 0] > 0, -1.0, 1.0).to(o.dtype)
    zero = torch.zeros_like(radial_u)
    normal = torch.zeros_like(o)
    normal.scatter_(1, u[cyl, None], torch.where(through_side, radial_u, zero)[:, None])
    normal.scatter_(1, v[cyl, None], torch.where(through_side, radial_v, zero)[:, None])
    normal.scatter_(1, axis[cyl, None], torch.where(through_side, zero, along)[:, None])
    return t_cyl, cyl, normal


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
