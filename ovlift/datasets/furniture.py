"""Furniture of ScanNet-20 classes built from boxes and cylinders, for the toy scenes.

Each template returns parts in the object's local frame: footprint centred on the
origin, floor at z = 0, the back towards +y (the wall side). A part is a solid
axis-aligned box, or the cylinder inscribed in such a box along a coordinate axis
(round table tops and pedestals, round stools, bolster cushions). A part lists
the faces that rest against something else (the floor, a wall, another part);
they are never seen, so they get no mesh vertices (a cylinder's faces are its
two caps, named after its axis: ``-z`` and ``+z`` for a vertical one).

Cushions are parts of the sofa or bed they lie on, with its class and instance:
ScanNet-20 has no pillow class, and a bolster is upholstered into the furniture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FACES = ("-x", "+x", "-y", "+y", "-z", "+z")


@dataclass(frozen=True)
class Part:
    """A solid piece of furniture: the box ``lo``-``hi``, or the cylinder inscribed in it."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    hidden: frozenset[str] = frozenset()
    """Faces resting against something else, never seen (see the module docstring)."""
    axis: int | None = None
    """None: a box; 0, 1 or 2: the cylinder along x, y or z inscribed in the box."""

    def __post_init__(self) -> None:
        if self.axis is not None:
            width = [h - lo for i, (lo, h) in enumerate(zip(self.lo, self.hi)) if i != self.axis]
            if abs(width[0] - width[1]) > 1e-9:
                raise ValueError(f"a cylinder along axis {self.axis} needs a square cross-section, got {width}")


def rotate_part(part: Part, quarter_turns: int, offset: np.ndarray) -> Part:
    """Rotate a part by k * 90 degrees about z (counter-clockwise), then translate."""
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][quarter_turns % 4]
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    corners = np.array([part.lo, part.hi]) @ rot.T
    lo, hi = corners.min(0) + offset, corners.max(0) + offset
    hidden = set()
    for face in part.hidden:
        axis = "xyz".index(face[1])
        direction = np.zeros(3)
        direction[axis] = 1.0 if face[0] == "+" else -1.0
        turned = rot @ direction
        new_axis = int(np.argmax(np.abs(turned)))
        hidden.add(("+" if turned[new_axis] > 0 else "-") + "xyz"[new_axis])
    axis = None if part.axis is None else int(np.argmax(np.abs(rot[:, part.axis])))
    return Part(tuple(lo), tuple(hi), frozenset(hidden), axis)


def box_part(x0, y0, z0, x1, y1, z1, hidden: str = "") -> Part:
    return Part((x0, y0, z0), (x1, y1, z1), frozenset(hidden.split()))


def cylinder_part(
    axis: str, centre: tuple[float, float], radius: float, start: float, end: float, hidden: str = ""
) -> Part:
    """The cylinder along ``axis`` from ``start`` to ``end``; ``centre``: its other two
    coordinates, in xyz order."""
    a = "xyz".index(axis)
    lo, hi = [start] * 3, [end] * 3
    for other, c in zip([i for i in range(3) if i != a], centre):
        lo[other], hi[other] = c - radius, c + radius
    return Part(tuple(lo), tuple(hi), frozenset(hidden.split()), a)


def _legs(sx: float, sy: float, height: float, thick: float, inset: float) -> list[Part]:
    xs = (-sx / 2 + inset, sx / 2 - inset - thick)
    ys = (-sy / 2 + inset, sy / 2 - inset - thick)
    return [box_part(x, y, 0, x + thick, y + thick, height, "-z +z") for x in xs for y in ys]


def table(r: np.random.Generator) -> list[Part]:
    """A rectangular top on four legs, or (one table in three) a round one."""
    if r.uniform() < 1 / 3:
        return round_table(r)
    sx, sy, h = r.uniform(1.0, 1.6), r.uniform(0.7, 1.0), r.uniform(0.70, 0.78)
    return [box_part(-sx / 2, -sy / 2, h - 0.05, sx / 2, sy / 2, h), *_legs(sx, sy, h - 0.05, 0.06, 0.05)]


def round_table(r: np.random.Generator) -> list[Part]:
    """A round top on a pedestal standing on a disc foot."""
    radius, h = r.uniform(0.4, 0.6), r.uniform(0.70, 0.78)
    top = cylinder_part("z", (0, 0), radius, h - 0.04, h)
    pedestal = cylinder_part("z", (0, 0), 0.05, 0.03, h - 0.04, "-z +z")
    foot = cylinder_part("z", (0, 0), r.uniform(0.22, 0.28), 0, 0.03, "-z")
    return [top, pedestal, foot]


def desk(r: np.random.Generator) -> list[Part]:
    sx, sy, h = r.uniform(1.2, 1.6), r.uniform(0.6, 0.8), r.uniform(0.72, 0.78)
    top = box_part(-sx / 2, -sy / 2, h - 0.04, sx / 2, sy / 2, h)
    sides = [box_part(x, -sy / 2, 0, x + 0.04, sy / 2, h - 0.04, "-z +z") for x in (-sx / 2, sx / 2 - 0.04)]
    drawers = box_part(sx / 2 - 0.5, -sy / 2 + 0.02, 0.35, sx / 2 - 0.04, sy / 2, h - 0.04, "+x +z")
    return [top, *sides, drawers]


def chair(r: np.random.Generator) -> list[Part]:
    s, h = r.uniform(0.42, 0.5), r.uniform(0.43, 0.48)
    seat = box_part(-s / 2, -s / 2, h - 0.05, s / 2, s / 2, h)
    back = box_part(-s / 2, s / 2 - 0.05, h, s / 2, s / 2, h + r.uniform(0.4, 0.5), "-z")
    return [seat, back, *_legs(s, s, h - 0.05, 0.04, 0.02)]


def sofa(r: np.random.Generator) -> list[Part]:
    sx, sy = r.uniform(1.6, 2.2), r.uniform(0.85, 0.95)
    base = box_part(-sx / 2, -sy / 2, 0, sx / 2, sy / 2 - 0.2, 0.42, "-z")
    back = box_part(-sx / 2, sy / 2 - 0.2, 0, sx / 2, sy / 2, 0.85, "-z")
    arms = [box_part(x0, -sy / 2, 0.42, x0 + 0.18, sy / 2 - 0.2, 0.62, "-z +y") for x0 in (-sx / 2, sx / 2 - 0.18)]
    # two bolster cushions on the seat against the back, 3 cm from the arms
    radius, length, end = r.uniform(0.08, 0.11), r.uniform(0.35, 0.5), sx / 2 - 0.18 - 0.03
    centre = (sy / 2 - 0.2 - radius, 0.42 + radius)
    cushions = [cylinder_part("x", centre, radius, x0, x0 + length) for x0 in (-end, end - length)]
    return [base, back, *arms, *cushions]


def bed(r: np.random.Generator) -> list[Part]:
    sx, sy = r.uniform(1.9, 2.1), r.uniform(1.4, 1.8)
    frame = box_part(-sx / 2, -sy / 2, 0, sx / 2 - 0.08, sy / 2, 0.3, "-z +x")
    mattress = box_part(-sx / 2 + 0.03, -sy / 2 + 0.03, 0.3, sx / 2 - 0.08, sy / 2 - 0.03, 0.5, "-z +x")
    head = box_part(sx / 2 - 0.08, -sy / 2, 0, sx / 2, sy / 2, 1.1, "-z")
    radius = r.uniform(0.09, 0.12)  # a bolster across the mattress at the head
    bolster = cylinder_part("y", (sx / 2 - 0.08 - radius, 0.5 + radius), radius, -sy / 2 + 0.13, sy / 2 - 0.13)
    return [frame, mattress, head, bolster]


def cabinet(r: np.random.Generator) -> list[Part]:
    sx, sy, h = r.uniform(0.6, 1.0), r.uniform(0.4, 0.6), r.uniform(0.7, 1.0)
    return [box_part(-sx / 2, -sy / 2, 0, sx / 2, sy / 2, h, "-z")]


def bookshelf(r: np.random.Generator) -> list[Part]:
    sx, sy, h, t = r.uniform(0.8, 1.1), r.uniform(0.3, 0.4), r.uniform(1.6, 2.0), 0.03
    sides = [box_part(x, -sy / 2, 0, x + t, sy / 2, h, "-z") for x in (-sx / 2, sx / 2 - t)]
    back = box_part(-sx / 2 + t, sy / 2 - t, 0, sx / 2 - t, sy / 2, h, "-z -x +x")
    shelves = [
        box_part(-sx / 2 + t, -sy / 2, z, sx / 2 - t, sy / 2 - t, z + t, "-x +x +y" + (" -z" if z == 0 else ""))
        for z in np.linspace(0, h - t, 5)
    ]
    return [*sides, back, *shelves]


def refrigerator(r: np.random.Generator) -> list[Part]:
    s, h = r.uniform(0.6, 0.8), r.uniform(1.7, 1.9)
    return [box_part(-s / 2, -s / 2, 0, s / 2, s / 2, h, "-z")]


def counter(r: np.random.Generator) -> list[Part]:
    sx, sy = r.uniform(1.4, 2.2), r.uniform(0.55, 0.65)
    base = box_part(-sx / 2, -sy / 2 + 0.05, 0, sx / 2, sy / 2, 0.86, "-z +z")
    top = box_part(-sx / 2 - 0.02, -sy / 2, 0.86, sx / 2 + 0.02, sy / 2, 0.9)
    return [base, top]


def toilet(r: np.random.Generator) -> list[Part]:
    bowl = box_part(-0.19, -0.3, 0, 0.19, 0.1, 0.4, "-z")
    tank = box_part(-0.21, 0.1, 0, 0.21, 0.3, 0.8, "-z")
    return [bowl, tank]


def sink(r: np.random.Generator) -> list[Part]:
    sx, sy = r.uniform(0.5, 0.7), r.uniform(0.4, 0.5)
    basin = box_part(-sx / 2, -sy / 2, 0.7, sx / 2, sy / 2, 0.85)
    pedestal = box_part(-0.08, -0.08, 0, 0.08, 0.08, 0.7, "-z +z")
    return [basin, pedestal]


def bathtub(r: np.random.Generator) -> list[Part]:
    sx, sy, h, t = r.uniform(1.5, 1.7), r.uniform(0.7, 0.8), 0.55, 0.08
    return [
        box_part(-sx / 2, -sy / 2, 0, sx / 2, sy / 2, 0.1, "-z"),
        box_part(-sx / 2, -sy / 2, 0.1, sx / 2, -sy / 2 + t, h, "-z"),
        box_part(-sx / 2, sy / 2 - t, 0.1, sx / 2, sy / 2, h, "-z"),
        box_part(-sx / 2, -sy / 2 + t, 0.1, -sx / 2 + t, sy / 2 - t, h, "-z -y +y"),
        box_part(sx / 2 - t, -sy / 2 + t, 0.1, sx / 2, sy / 2 - t, h, "-z -y +y"),
    ]


def otherfurniture(r: np.random.Generator) -> list[Part]:
    """A square block or (half of them) a round stool."""
    s, h = r.uniform(0.35, 0.6), r.uniform(0.4, 0.7)
    if r.uniform() < 0.5:
        return [cylinder_part("z", (0, 0), s / 2, 0, h, "-z")]
    return [box_part(-s / 2, -s / 2, 0, s / 2, s / 2, h, "-z")]


def _panel(width: float, bottom: float, top: float, thick: float) -> list[Part]:
    """A flat object on a wall: the +y face rests on the wall."""
    return [box_part(-width / 2, -thick, bottom, width / 2, 0.0, top, "+y")]


def door(r: np.random.Generator) -> list[Part]:
    return _panel(r.uniform(0.8, 1.0), 0.0, r.uniform(2.0, 2.1), 0.04)


def window(r: np.random.Generator) -> list[Part]:
    bottom = r.uniform(0.9, 1.1)
    return _panel(r.uniform(0.9, 1.5), bottom, bottom + r.uniform(0.9, 1.2), 0.04)


def picture(r: np.random.Generator) -> list[Part]:
    bottom = r.uniform(1.2, 1.5)
    return _panel(r.uniform(0.4, 0.9), bottom, bottom + r.uniform(0.3, 0.6), 0.03)


def curtain(r: np.random.Generator) -> list[Part]:
    return _panel(r.uniform(1.0, 1.6), 0.1, r.uniform(2.1, 2.3), 0.06)


FLOOR_TEMPLATES: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "table": table,
    "desk": desk,
    "chair": chair,
    "sofa": sofa,
    "bed": bed,
    "cabinet": cabinet,
    "bookshelf": bookshelf,
    "refrigerator": refrigerator,
    "counter": counter,
    "toilet": toilet,
    "sink": sink,
    "bathtub": bathtub,
    "otherfurniture": otherfurniture,
}
"""Objects standing on the floor, by ScanNet-20 class name."""

WALL_TEMPLATES: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "door": door,
    "window": window,
    "picture": picture,
    "curtain": curtain,
}
"""Flat objects hung on a wall (their local +y face touches the wall)."""

CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "wall": (174, 199, 232),
    "floor": (152, 223, 138),
    "cabinet": (31, 119, 180),
    "bed": (255, 187, 120),
    "chair": (188, 189, 34),
    "sofa": (140, 86, 75),
    "table": (255, 152, 150),
    "door": (214, 39, 40),
    "window": (197, 176, 213),
    "bookshelf": (148, 103, 189),
    "picture": (196, 156, 148),
    "counter": (23, 190, 207),
    "desk": (247, 182, 210),
    "curtain": (219, 219, 141),
    "refrigerator": (255, 127, 14),
    "shower curtain": (158, 218, 229),
    "toilet": (44, 160, 44),
    "sink": (112, 128, 144),
    "bathtub": (227, 119, 194),
    "otherfurniture": (82, 84, 163),
    "ceiling": (200, 200, 200),
}
"""ScanNet's benchmark colours, used to paint the toy scenes."""
