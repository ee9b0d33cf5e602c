"""Point prompts for SAM from a coarse mask (SAS's ``sam_util``): farthest from the mask's edge.

``sam_prompt_points`` is the whole rule: clear a border, seed an (almost) empty mask
near the centre, then pick points by distance transform. Components are 8-connected
(as OpenCV's ``connectedComponentsWithStats`` that SAS calls); distances are exact
Euclidean (SAS: OpenCV's 5x5 approximation). Ties go to the first pixel in row-major
order, as SAS's ``np.where(dist == max)[0][0]``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy import ndimage

PointRule = Literal["sas", "spread"]

SEED_ROWS_512 = (240, 270)
"""SAS's seeds on a 512 px mask: 2x2 squares at these rows and columns (scaled to other sizes)."""


def clear_border(mask: torch.Tensor, border_px: int) -> torch.Tensor:
    """(H, W) bool mask without its ``border_px`` wide frame (SAS: 70 px, "masks appear in corners")."""
    out = mask.clone()
    if border_px > 0:
        out[:border_px] = False
        out[-border_px:] = False
        out[:, :border_px] = False
        out[:, -border_px:] = False
    return out


def seed_centre(mask: torch.Tensor, min_pixels: int = 10) -> torch.Tensor:
    """The mask, with four 2x2 seeds painted near its centre when it has fewer than ``min_pixels``
    pixels (SAS: at rows and columns 240 and 270 of 512; here scaled to the mask's size)."""
    if int(mask.sum()) >= min_pixels:
        return mask
    h, w = mask.shape
    out = mask.clone()
    for r in SEED_ROWS_512:
        for c in SEED_ROWS_512:
            y, x = min(round(r * h / 512), h - 2), min(round(c * w / 512), w - 2)
            out[y : y + 2, x : x + 2] = True
    return out


def farthest_points(mask: torch.Tensor, count: int = 3, rule: PointRule = "sas") -> torch.Tensor:
    """(count, 2) int64 (x, y): positive points inside a non-empty (H, W) bool mask.

    With as many components as points or more, one point in each of the ``count``
    largest; with fewer, one in each component and the rest in the largest (SAS, 3
    points: 1 component -> A, B, C in it; 2 -> A, B in the largest, C in the second).
    A point is the pixel farthest from the component's edge; before the next point in
    the same component, ``sas`` removes the chosen pixel only (so B and C end next to
    A, as in SAS's code), ``spread`` removes the chosen point's inscribed disc (radius =
    its distance to the edge), so the next point lies in the next-widest part; where
    nothing would be left it removes the pixel only. A component with no pixel left
    repeats its last point.
    """
    m = mask.cpu().numpy().astype(bool)
    if not m.any():
        raise ValueError("farthest_points: the mask is empty (seed it first: seed_centre)")
    labels, n = ndimage.label(m, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    used = np.argsort(-areas, kind="stable")[: min(n, count)] + 1  # largest first; ties: scan order
    per_component = [count - len(used) + 1] + [1] * (len(used) - 1)
    yy, xx = np.indices(m.shape)
    points = []
    for label, k in zip(used, per_component):
        component = labels == label
        for _ in range(k):
            if component.any():
                dist = ndimage.distance_transform_edt(component)
                y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
                radius = dist[y, x]
            points.append((int(x), int(y)))
            if rule == "spread":
                disc = (yy - y) ** 2 + (xx - x) ** 2 < radius**2
                if (component & ~disc).any():
                    component &= ~disc
                    continue
            component[y, x] = False
    return torch.tensor(points, dtype=torch.int64)


def sam_prompt_points(
    coarse: torch.Tensor, border_px: int = 70, count: int = 3, rule: PointRule = "sas"
) -> torch.Tensor:
    """(count, 2) int64 (x, y) prompts from an (H, W) bool coarse mask: border cleared, seeded, farthest points."""
    return farthest_points(seed_centre(clear_border(coarse, border_px)), count, rule)
