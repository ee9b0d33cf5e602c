"""Street objects of the ``toy-street`` scenes, built from boxes and cylinders.

Each template returns an object in its local frame: heading +x, footprint centred
on the origin, standing on the ground at z = 0, as one or more (class, parts)
instances that move together (a cyclist is a bicycle and a person). Parts are
``furniture.Part``: an axis-aligned box or the cylinder inscribed in it; wheels
are cylinders along y. Sizes are drawn from the generator given, in a fixed order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ovlift.datasets.furniture import Part, box_part, cylinder_part, rotate_part

STREET_COLORS: dict[str, tuple[int, int, int]] = {
    "barrier": (205, 205, 195),
    "bicycle": (30, 90, 200),
    "bus": (200, 45, 40),
    "car": (140, 150, 165),
    "construction vehicle": (240, 180, 20),
    "motorcycle": (60, 60, 75),
    "person": (125, 75, 140),
    "traffic cone": (255, 110, 20),
    "trailer": (235, 235, 228),
    "truck": (90, 120, 175),
    "drivable surface": (75, 75, 80),
    "other flat": (170, 150, 120),
    "sidewalk": (178, 178, 172),
    "terrain": (120, 150, 70),
    "manmade": (190, 160, 130),
    "vegetation": (40, 115, 40),
}
"""Base colour per class (a photo-like palette, not nuScenes' label colours)."""
SKY_COLORS = ((185, 210, 240), (95, 145, 215))
"""Sky colour at the horizon and at the zenith."""

Template = Callable[[np.random.Generator], list[tuple[str, list[Part]]]]
"""An object in its local frame (heading +x, footprint centred on the origin, on the
ground at z = 0): one or more (class, parts) instances that move together."""


def _wheels(length_axles: list[float], width: float, radius: float, tread: float = 0.24) -> list[Part]:
    """Two wheels per axle (cylinders along y), their outer faces just inside ``width``."""
    out = []
    for x in length_axles:
        for y0 in (-width / 2 + 0.02, width / 2 - 0.02 - tread):
            out.append(cylinder_part("y", (x, radius), radius, y0, y0 + tread))
    return out


def car(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """A body box with a cabin on top and four wheels; one in four is a taller SUV/van."""
    length, width = r.uniform(3.9, 4.9), r.uniform(1.7, 1.95)
    tall = r.uniform() < 0.25
    body_top, roof = (
        (r.uniform(1.0, 1.1), r.uniform(1.7, 1.95)) if tall else (r.uniform(0.82, 0.95), r.uniform(1.4, 1.55))
    )
    front = length / 2 - (r.uniform(0.6, 0.9) if tall else r.uniform(1.1, 1.4))
    parts = [
        box_part(-length / 2, -width / 2, 0.28, length / 2, width / 2, body_top),
        box_part(-length / 2 + 0.3, -width / 2 + 0.08, body_top, front, width / 2 - 0.08, roof),
    ]
    return [("car", parts + _wheels([-length / 2 + 0.8, length / 2 - 0.9], width, 0.32))]


def truck(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """A box truck: cab, cargo box, three axles."""
    cab, cargo, width = r.uniform(1.9, 2.4), r.uniform(4.5, 7.5), 2.45
    length = cab + 0.25 + cargo
    x0 = -length / 2
    parts = [
        box_part(length / 2 - cab, -width / 2, 0.5, length / 2, width / 2, r.uniform(2.7, 3.2)),
        box_part(x0, -width / 2, 0.95, x0 + cargo, width / 2, r.uniform(3.2, 3.8)),
    ]
    axles = [length / 2 - cab / 2, x0 + 1.0, x0 + 2.4]
    return [("truck", parts + _wheels(axles, width, 0.5, 0.3))]


def bus(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """One long box on two axles."""
    length, width = r.uniform(10.0, 12.5), 2.55
    body = box_part(-length / 2, -width / 2, 0.35, length / 2, width / 2, r.uniform(3.0, 3.3))
    return [("bus", [body, *_wheels([-length / 2 + 2.8, length / 2 - 2.5], width, 0.5, 0.3)])]


def trailer_parts(r: np.random.Generator, front_x: float, legs: bool) -> list[Part]:
    """A semi-trailer whose front is at ``front_x``: box, two rear axles, landing legs."""
    length, width = r.uniform(7.0, 12.0), 2.5
    x0 = front_x - length
    parts = [box_part(x0, -width / 2, 1.15, front_x, width / 2, r.uniform(3.6, 3.95))]
    if legs:
        parts.append(box_part(front_x - 2.2, -width / 2 + 0.2, 0.0, front_x - 1.9, width / 2 - 0.2, 1.15))
    return parts + _wheels([x0 + 1.2, x0 + 2.5], width, 0.5, 0.3)


def trailer(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """A parked semi-trailer standing on its landing legs."""
    parts = trailer_parts(r, 0.0, legs=True)
    lo = min(p.lo[0] for p in parts)
    return [("trailer", [rotate_part(p, 0, np.array([-lo / 2, 0.0, 0.0])) for p in parts])]


def semi(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """A tractor unit (class truck) pulling a semi-trailer (class trailer)."""
    width = 2.5
    tractor = [
        box_part(3.2, -width / 2, 0.6, 5.6, width / 2, r.uniform(3.1, 3.6)),
        box_part(0.0, -0.9, 0.6, 3.2, 0.9, 1.15),
        *_wheels([0.9, 4.6], width, 0.5, 0.3),
    ]
    pulled = trailer_parts(r, 1.6, legs=False)
    lo = min(p.lo[0] for p in pulled)
    shift = np.array([-(lo + 5.6) / 2, 0.0, 0.0])
    return [
        ("truck", [rotate_part(p, 0, shift) for p in tractor]),
        ("trailer", [rotate_part(p, 0, shift) for p in pulled]),
    ]


def construction_vehicle(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """An excavator: two tracks, a body, a cab and a boom with a bucket, pointing +x."""
    width = r.uniform(2.3, 2.6)
    body_top = r.uniform(1.9, 2.2)
    parts = [
        box_part(-2.0, -width / 2, 0.0, 2.0, -width / 2 + 0.55, 0.85),
        box_part(-2.0, width / 2 - 0.55, 0.0, 2.0, width / 2, 0.85),
        box_part(-1.8, -width / 2 + 0.1, 0.85, 1.2, width / 2 - 0.1, body_top),
        box_part(0.0, -width / 2 + 0.1, body_top, 1.2, 0.0, body_top + 1.1),
        box_part(1.2, 0.15, 2.2, 4.2, 0.55, 2.6),
        box_part(3.8, 0.15, 0.6, 4.2, 0.55, 2.2),
        box_part(3.6, -0.3, 0.0, 4.6, 1.0, 0.6),
    ]
    return [("construction vehicle", parts)]


def motorcycle(r: np.random.Generator, rider: bool) -> list[tuple[str, list[Part]]]:
    body = box_part(-0.9, -0.22, 0.35, 0.9, 0.22, r.uniform(0.95, 1.15))
    wheels = [cylinder_part("y", (x, 0.32), 0.32, -0.07, 0.07) for x in (-0.7, 0.7)]
    out = [("motorcycle", [body, *wheels])]
    if rider:
        out.append(("person", _person(r, 0.75, -0.15)))
    return out


def cyclist(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """A bicycle (frame box, two thin wheels) with a person riding it."""
    frame = box_part(-0.55, -0.05, 0.4, 0.55, 0.05, 1.0)
    wheels = [cylinder_part("y", (x, 0.34), 0.34, -0.03, 0.03) for x in (-0.55, 0.55)]
    return [("bicycle", [frame, *wheels]), ("person", _person(r, 0.85, -0.1))]


def _person(r: np.random.Generator, base: float = 0.0, x: float = 0.0) -> list[Part]:
    """A body cylinder and a head cylinder; ``base``: the height the body starts at."""
    height, radius = r.uniform(1.55, 1.9), r.uniform(0.2, 0.26)
    top = base + (height - 0.25) * (0.6 if base > 0 else 1.0)
    return [
        cylinder_part("z", (x, 0.0), radius, base, top),
        cylinder_part("z", (x, 0.0), 0.11, top, top + 0.25),
    ]


def person(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    return [("person", _person(r))]


def barrier(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """A concrete (jersey) barrier segment along x."""
    length, width = r.uniform(1.8, 2.2), r.uniform(0.35, 0.6)
    return [("barrier", [box_part(-length / 2, -width / 2, 0, length / 2, width / 2, r.uniform(0.8, 1.05))])]


def traffic_cone(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """A square base plate and a (cylindrical) cone."""
    radius, height = r.uniform(0.1, 0.14), r.uniform(0.45, 0.75)
    return [
        (
            "traffic cone",
            [box_part(-0.19, -0.19, 0, 0.19, 0.19, 0.04), cylinder_part("z", (0, 0), radius, 0.04, 0.04 + height)],
        )
    ]


def street_light(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """A pole with an arm reaching towards +x and a lamp under the arm's end."""
    height, arm = r.uniform(6.0, 9.0), r.uniform(1.2, 2.2)
    parts = [
        cylinder_part("z", (0, 0), 0.1, 0, height),
        box_part(0.1, -0.06, height - 0.15, arm, 0.06, height),
        box_part(arm - 0.5, -0.15, height - 0.3, arm, 0.15, height - 0.15),
    ]
    return [("manmade", parts)]


def traffic_sign(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    """A thin pole with a square sign facing x."""
    height = r.uniform(2.2, 2.8)
    sign = box_part(-0.03, -0.3, height - 0.6, 0.03, 0.3, height)
    return [("manmade", [cylinder_part("z", (0, 0), 0.04, 0, height - 0.6), sign])]


def tree(r: np.random.Generator, max_crown_m: float = 3.0) -> list[tuple[str, list[Part]]]:
    """A trunk cylinder and a crown: a cylinder (two in three) or a box, from 2.5 m up."""
    trunk_h, trunk_r = r.uniform(2.8, 4.0), r.uniform(0.12, 0.3)
    crown_r = r.uniform(1.2, max(1.21, min(3.0, max_crown_m)))
    crown_lo, crown_hi = max(2.5, trunk_h - 0.6), trunk_h + r.uniform(2.0, 5.0)
    if r.uniform() < 2 / 3:
        crown = cylinder_part("z", (0, 0), crown_r, crown_lo, crown_hi)
    else:
        crown = box_part(-crown_r, -crown_r, crown_lo, crown_r, crown_r, crown_hi)
    return [("vegetation", [cylinder_part("z", (0, 0), trunk_r, 0, trunk_h), crown])]


def bush(r: np.random.Generator) -> list[tuple[str, list[Part]]]:
    radius, height = r.uniform(0.4, 1.0), r.uniform(0.6, 1.4)
    if r.uniform() < 0.5:
        return [("vegetation", [cylinder_part("z", (0, 0), radius, 0, height)])]
    return [("vegetation", [box_part(-radius * 1.5, -radius, 0, radius * 1.5, radius, height)])]


MOVING_VEHICLES: tuple[tuple[Template, float], ...] = (
    (car, 0.62),
    (truck, 0.1),
    (bus, 0.1),
    (semi, 0.06),
    (construction_vehicle, 0.03),
    (lambda r: motorcycle(r, rider=True), 0.09),
)
"""Vehicles driving in the lanes, with their weights."""
PARKED_VEHICLES: tuple[tuple[Template, float], ...] = (
    (car, 0.8),
    (truck, 0.06),
    (trailer, 0.05),
    (construction_vehicle, 0.03),
    (lambda r: motorcycle(r, rider=False), 0.06),
)
"""Vehicles parked in the parking strips, with their weights."""
