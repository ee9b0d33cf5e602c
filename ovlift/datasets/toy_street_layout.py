"""The street of a ``toy-street`` scene: ground, buildings, vegetation, traffic.

Everything is drawn from one generator seeded by (seed, scene index), in a fixed
order, and nothing here depends on the sensors (sweep count, image size), so a
scene's layout is the same whatever is rendered of it. The frame is the street's
map frame (x along the road, y left, z up, metres, ground at z = 0); the ego
vehicle is at x = 0 at the key frame. ``toy_street.py``'s docstring describes the
world; this module only places it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ovlift.datasets.furniture import Part, box_part, rotate_part
from ovlift.datasets.toy_street_objects import (
    MOVING_VEHICLES,
    PARKED_VEHICLES,
    Template,
    barrier,
    bush,
    car,
    construction_vehicle,
    cyclist,
    person,
    street_light,
    traffic_cone,
    traffic_sign,
    tree,
)

X_EXTENT_M = 85.0
"""The world runs from x = -85 to 85 m (the LiDAR reaches 70 m from the ego's
positions, x in [-5, 1] m); objects stand within +-78 m."""
SKY_HEIGHT_M = 60.0
"""The ceiling of the enclosing box (taller than any building)."""
SWEEP_WINDOW_S = 0.5
"""Movers are placed so that nothing collides over the last 0.5 s (ten 20 Hz sweeps):
each occupies the footprint it sweeps in that time."""
FOOTPRINT_HEIGHT_M = 2.3
"""Parts starting below this height occupy ground (tree crowns, awnings and lamp arms
above it may overhang)."""


@dataclass(frozen=True)
class EgoMotion:
    """The ego vehicle's planar motion: constant speed and yaw rate, at x = 0 at time 0."""

    y: float
    """Lateral position at the key frame (the centre of its lane), metres."""
    yaw: float
    """Heading at the key frame, radians from +x (small: the ego drifts in its lane)."""
    speed: float
    """Metres per second."""
    yaw_rate: float
    """Radians per second."""

    def pose(self, time: float) -> np.ndarray:
        """(4, 4) ego-to-map at ``time`` seconds from the key frame (exact arc of a circle)."""
        yaw = self.yaw + self.yaw_rate * time
        if abs(self.yaw_rate) < 1e-12:
            dx, dy = self.speed * time * math.cos(self.yaw), self.speed * time * math.sin(self.yaw)
        else:
            radius = self.speed / self.yaw_rate
            dx, dy = radius * (math.sin(yaw) - math.sin(self.yaw)), -radius * (math.cos(yaw) - math.cos(self.yaw))
        pose = np.eye(4)
        pose[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
        pose[:2, 3] = [dx, self.y + dy]
        return pose


@dataclass
class StreetLayout:
    """Solids, instances and motion of one street, in its map frame at the key frame (time 0)."""

    bounds_min: np.ndarray
    bounds_max: np.ndarray
    """(3,) the enclosing box: its floor is the ground, its walls and ceiling are sky."""
    part_min: np.ndarray
    part_max: np.ndarray
    """(P, 3) part boxes at time 0."""
    part_axis: np.ndarray
    """(P,) ``BOX`` (-1), or the axis of the cylinder inscribed in the part's box."""
    part_instance: np.ndarray
    """(P,) instance of each part."""
    instance_class: list[str | None]
    """Class name per instance; instance 0 is the sky (None), 1 the ground outside every region."""
    instance_velocity: np.ndarray
    """(I, 3) metres per second (zero for static instances)."""
    floor_regions: np.ndarray
    """(K, 4) x0, y0, x1, y1 rectangles of the ground; a later region wins where they overlap."""
    floor_instance: np.ndarray
    """(K,) instance of each region."""
    ego: EgoMotion


class _Builder:
    """Collects instances and parts, refusing objects whose ground footprint, swept over
    the sweep window, overlaps one already placed."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.classes: list[str | None] = [None, "terrain"]
        self.velocity: list[np.ndarray] = [np.zeros(3), np.zeros(3)]
        self.parts: list[tuple[Part, int]] = []
        self.occupied: list[np.ndarray] = []  # (2, 2) xy lo/hi

    def instance(self, name: str, velocity: np.ndarray | None = None) -> int:
        self.classes.append(name)
        self.velocity.append(np.zeros(3) if velocity is None else np.asarray(velocity, float))
        return len(self.classes) - 1

    def place(
        self,
        template: list[tuple[str, list[Part]]],
        xy: tuple[float, float],
        turns: int = 0,
        velocity: tuple[float, float] = (0.0, 0.0),
        margin: float | tuple[float, float] = 0.3,
        z: float = 0.0,
        occupy: bool = True,
    ) -> bool:
        """Turn the object by ``turns`` quarter turns, move it to ``xy`` (and up by ``z``);
        add it if its swept footprint (grown by ``margin``, or by (x, y) margins) is free."""
        offset = np.array([xy[0], xy[1], z])
        moved = [(name, [rotate_part(p, turns, offset) for p in parts]) for name, parts in template]
        v = np.array([velocity[0], velocity[1], 0.0])
        margin = np.broadcast_to(np.asarray(margin, float), (2,))
        low = [p for _, parts in moved for p in parts if p.lo[2] < z + FOOTPRINT_HEIGHT_M]
        if low:
            lo = np.min([p.lo[:2] for p in low], axis=0) - np.maximum(0, v[:2] * SWEEP_WINDOW_S) - margin
            hi = np.max([p.hi[:2] for p in low], axis=0) - np.minimum(0, v[:2] * SWEEP_WINDOW_S) + margin
            if any(np.all(lo < o[1]) and np.all(o[0] < hi) for o in self.occupied):
                return False
            if occupy:
                self.occupied.append(np.array([lo + margin, hi - margin]))
        for name, parts in moved:
            index = self.instance(name, v)
            self.parts += [(p, index) for p in parts]
        return True

    def solid(self, name: str, lo: tuple[float, ...], hi: tuple[float, ...], occupy: bool = False) -> int:
        """A static box of its own instance (sidewalks, the island: ground others stand on)."""
        index = self.instance(name)
        self.parts.append((Part(tuple(lo), tuple(hi)), index))
        if occupy:
            self.occupied.append(np.array([lo[:2], hi[:2]], float))
        return index


@dataclass(frozen=True)
class _CrossSection:
    """The street's drawn dimensions across y (each pair: right (-y) side, left (+y) side)."""

    lanes: int
    """Lanes each way."""
    lane_w: float
    median: float
    """Half-width of a traffic island (0: none)."""
    parking: tuple[float, float]
    """Width of the parking strip (0: none)."""
    walk: tuple[float, float]
    grass: tuple[float, float]
    curb: float
    cross: tuple[float, float] | None
    """x range of a cross street (an intersection), ahead or behind."""

    @property
    def road(self) -> list[float]:
        """The road edge's distance from the axis, per side."""
        return [self.median + self.lanes * self.lane_w + p for p in self.parking]

    @property
    def front(self) -> list[float]:
        """Where the buildings may start, per side."""
        road = self.road
        return [road[s] + self.walk[s] + self.grass[s] for s in range(2)]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        front = self.front
        depth_max = [front[s] + 3.0 + 16.0 for s in range(2)]
        bounds_min = np.array([-X_EXTENT_M, -depth_max[0] - 8.0, 0.0])
        bounds_max = np.array([X_EXTENT_M, depth_max[1] + 8.0, SKY_HEIGHT_M])
        return bounds_min, bounds_max

    def along(self, lo: float, hi: float) -> list[tuple[float, float]]:
        """The x intervals of [lo, hi] outside the cross street."""
        cross = self.cross
        if cross is None:
            return [(lo, hi)]
        return [(a, b) for a, b in ((lo, min(hi, cross[0])), (max(lo, cross[1]), hi)) if b > a]


_SIDES = ((0, -1.0), (1, 1.0))
"""(side index, sign of its y): the right side, then the left."""


def make_street(rng: np.random.Generator, moving_vehicles: int, pedestrians: int, cyclists: int) -> StreetLayout:
    """Draw one street; see ``toy_street.py``'s docstring for what it holds. Each step
    below draws from ``rng`` in turn: their order is the street."""
    b = _Builder(rng)
    street = _draw_cross_section(rng)
    regions, road_instance = _ground(b, street)
    ego = _ego(b, rng, street)
    _buildings(b, rng, street)
    _curbside(b, rng, street)
    _island(b, rng, street)
    _construction_zone(b, rng, street)
    _parked_vehicles(b, rng, street)
    _sidewalk_obstacles(b, rng, street)
    _traffic(b, rng, street, moving_vehicles, cyclists)
    _pedestrians(b, rng, street, pedestrians)
    bounds_min, bounds_max = street.bounds
    return StreetLayout(
        bounds_min=bounds_min,
        bounds_max=bounds_max,
        part_min=np.array([p.lo for p, _ in b.parts], float).reshape(-1, 3),
        part_max=np.array([p.hi for p, _ in b.parts], float).reshape(-1, 3),
        part_axis=np.array([-1 if p.axis is None else p.axis for p, _ in b.parts], dtype=np.int64),
        part_instance=np.array([i for _, i in b.parts], dtype=np.int64),
        instance_class=b.classes,
        instance_velocity=np.array(b.velocity),
        floor_regions=np.array(regions, float),
        floor_instance=np.full(len(regions), road_instance, dtype=np.int64),
        ego=ego,
    )


def _draw_cross_section(rng: np.random.Generator) -> _CrossSection:
    """The lanes, parking strips, sidewalks, grass, curb and a cross street, drawn in this order."""
    lanes, lane_w = int(rng.integers(1, 3)), rng.uniform(3.0, 3.6)
    median = rng.uniform(0.6, 1.6) if rng.uniform() < 0.6 else 0.0
    parking = [rng.uniform(2.1, 2.5) if rng.uniform() < 0.65 else 0.0 for _ in range(2)]
    walk = [rng.uniform(1.8, 4.0) for _ in range(2)]
    grass = [rng.uniform(0.0, 4.0) for _ in range(2)]
    curb = rng.uniform(0.12, 0.18)
    cross = None
    if rng.uniform() < 0.5:
        centre = rng.choice([-1, 1]) * rng.uniform(18, 55)
        half = rng.uniform(3.2, 4.5)
        cross = (centre - half, centre + half)
    return _CrossSection(
        lanes, lane_w, median, (parking[0], parking[1]), (walk[0], walk[1]), (grass[0], grass[1]), curb, cross
    )


def _ground(b: _Builder, street: _CrossSection) -> tuple[list[tuple[float, ...]], int]:
    """The road surface (with the cross street) as floor regions, the sidewalks and the
    island as solids; returns the regions and the road's instance."""
    road, walk, cross, curb, median = street.road, street.walk, street.cross, street.curb, street.median
    x_lo, x_hi = -X_EXTENT_M, X_EXTENT_M
    bounds_min, bounds_max = street.bounds
    road_instance = b.instance("drivable surface")
    regions = [(x_lo, -road[0], x_hi, road[1])]
    if cross is not None:
        regions.append((cross[0], bounds_min[1], cross[1], bounds_max[1]))
    if median > 0:
        for a, c in street.along(x_lo, x_hi):
            b.solid("other flat", (a + 1.0 * (a > x_lo), -median, 0.0), (c - 1.0 * (c < x_hi), median, curb))
    for s, sign in _SIDES:
        y0, y1 = sorted((sign * road[s], sign * (road[s] + walk[s])))
        for a, c in street.along(x_lo, x_hi):
            b.solid("sidewalk", (a, y0, 0.0), (c, y1, curb))
        if cross is not None:  # the cross street's sidewalks, along y
            far = bounds_max[1] if sign > 0 else bounds_min[1]
            ya, yb = sorted((sign * road[s], far))
            width = walk[s]
            b.solid("sidewalk", (cross[0] - width, ya, 0.0), (cross[0], yb, curb))
            b.solid("sidewalk", (cross[1], ya, 0.0), (cross[1] + width, yb, curb))
    b.occupied.append(np.array([[x_lo, -median], [x_hi, median]]))  # nothing stands on the island but its own
    return regions, road_instance


def _ego(b: _Builder, rng: np.random.Generator, street: _CrossSection) -> EgoMotion:
    """The ego: in a lane of the right side, driving +x; its corridor is kept free."""
    lane = int(rng.integers(street.lanes))
    ego = EgoMotion(
        y=-(street.median + (lane + 0.5) * street.lane_w),
        yaw=float(np.clip(rng.normal(0, math.radians(1.5)), -0.05, 0.05)),
        speed=rng.uniform(5.0, 10.0),
        yaw_rate=rng.uniform(-0.04, 0.04),
    )
    b.occupied.append(np.array([[-ego.speed * SWEEP_WINDOW_S - 2.5, ego.y - 1.6], [6.5, ego.y + 1.6]]))
    return ego


def _buildings(b: _Builder, rng: np.random.Generator, street: _CrossSection) -> None:
    """Buildings with gaps; fences and bushes in some gaps."""
    cross, walk, front = street.cross, street.walk, street.front
    for s, sign in _SIDES:
        for a, c in street.along(-78.0, 78.0):
            if cross is not None:
                a = a if a < cross[0] else a + walk[s] + 1.0
                c = c if c > cross[1] else c - walk[s] - 1.0
            x = a + rng.uniform(0, 6)
            while x < c - 4:
                length = min(rng.uniform(8, 32), c - x)
                if rng.uniform() < 0.85:
                    _building(b, rng, x, length, sign, front[s] + rng.uniform(0, 3.0))
                elif rng.uniform() < 0.5:
                    y = sign * (front[s] + 0.3)
                    b.place([("manmade", [box_part(0, -0.1, 0, length, 0.1, rng.uniform(1.0, 2.0))])], (x, y))
                x += length
                gap = rng.uniform(2, 12) if rng.uniform() < 0.6 else 0.0
                if gap > 3 and rng.uniform() < 0.6:
                    b.place(bush(rng), (x + gap / 2, sign * (front[s] + rng.uniform(1, 4))))
                x += gap


def _curbside(b: _Builder, rng: np.random.Generator, street: _CrossSection) -> None:
    """Street lights, signs and trees along the curbs; trees and bushes on the grass."""
    road, curb = street.road, street.curb
    for s, sign in _SIDES:
        turns = 1 if sign < 0 else 3  # the light's arm reaches over the road
        for a, c in street.along(-78.0, 78.0):
            x = a + rng.uniform(2, 15)
            while x < c - 1:
                b.place(street_light(rng), (x, sign * (road[s] + 0.4)), turns, z=curb)
                x += rng.uniform(20, 35)
            for _ in range(int(rng.integers(0, 3))):
                sign_xy = (rng.uniform(a, c), sign * (road[s] + 0.35))
                b.place(traffic_sign(rng), sign_xy, int(rng.integers(2)) * 2, z=curb)
            _greenery(b, rng, street, s, (a, c))


def _greenery(b: _Builder, rng: np.random.Generator, street: _CrossSection, s: int, span: tuple[float, float]) -> None:
    """Trees on side ``s``'s grass (or on a wide sidewalk) and bushes on the grass, along ``span``."""
    road, walk, grass, sign = street.road, street.walk, street.grass, _SIDES[s][1]
    x = span[0] + rng.uniform(1, 8)
    while x < span[1] - 1:
        if grass[s] > 1.4:
            where, room = sign * (road[s] + walk[s] + grass[s] / 2), walk[s] + grass[s] / 2
            b.place(tree(rng, room + 0.3), (x, where))
        elif walk[s] > 2.6 and rng.uniform() < 0.5:
            b.place(tree(rng, 1.5), (x, sign * (road[s] + 0.8)), z=street.curb)
        if grass[s] > 1.0 and rng.uniform() < 0.3:
            b.place(bush(rng), (x + rng.uniform(3, 6), sign * (road[s] + walk[s] + grass[s] / 2)))
        x += rng.uniform(7, 16)


def _island(b: _Builder, rng: np.random.Generator, street: _CrossSection) -> None:
    """Street lights and trees on a wide traffic island."""
    if street.median >= 0.9:
        for x in np.arange(-X_EXTENT_M + rng.uniform(5, 20), X_EXTENT_M - 5, rng.uniform(20, 40)):
            item = street_light(rng) if rng.uniform() < 0.5 else tree(rng, 2.0)
            b.place(item, (x, 0.0), z=street.curb, occupy=False)


def _construction_zone(b: _Builder, rng: np.random.Generator, street: _CrossSection) -> None:
    """A construction zone on the left side: barriers along its road side, cones at its
    ends, an excavator inside."""
    if rng.uniform() < 0.5 and (street.parking[1] > 0 or street.lanes == 2):
        road = street.road
        x0, length = rng.uniform(-60, 40), rng.uniform(12, 25)
        inner = road[1] - 3.4
        if b.place(construction_vehicle(rng), (x0 + length / 2, road[1] - 1.5), int(rng.integers(2)) * 2, margin=0.0):
            b.occupied.append(np.array([[x0 - 1, inner], [x0 + length + 1, road[1]]]))
            for x in np.arange(x0, x0 + length, 2.2):
                b.place(barrier(rng), (x + 1.1, inner + 0.3), occupy=False)
            for x, y in ((x0 - 0.8, inner + 0.6), (x0 - 1.6, inner + 1.6), (x0 + length + 0.8, inner + 0.6)):
                b.place(traffic_cone(rng), (x, y), occupy=False)


def _parked_vehicles(b: _Builder, rng: np.random.Generator, street: _CrossSection) -> None:
    """Parked vehicles along the curbs, facing their side's traffic."""
    for s, sign in _SIDES:
        if street.parking[s] == 0:
            continue
        y = sign * (street.road[s] - street.parking[s] / 2)
        for a, c in street.along(-78.0, 78.0):
            x = a + rng.uniform(0, 5)
            while x < c - 3:
                if rng.uniform() < 0.55:
                    template = _choose(rng, PARKED_VEHICLES)
                    b.place(template, (x + 3.0, y), 0 if sign < 0 else 2, margin=0.2)
                x += rng.uniform(6.5, 9.0)


def _sidewalk_obstacles(b: _Builder, rng: np.random.Generator, street: _CrossSection) -> None:
    """A few rows of barriers or cones on a sidewalk."""
    for _ in range(int(rng.integers(0, 3))):
        s = int(rng.integers(2))
        sign = -1.0 if s == 0 else 1.0
        x, item = rng.uniform(-60, 60), barrier if rng.uniform() < 0.5 else traffic_cone
        for k in range(int(rng.integers(2, 6))):
            b.place(item(rng), (x + 2.3 * k, sign * (street.road[s] + street.walk[s] / 2)), z=street.curb)


def _traffic(b: _Builder, rng: np.random.Generator, street: _CrossSection, vehicles: int, cyclists: int) -> None:
    """Vehicles in the lanes (the right side drives +x), cross traffic, cyclists."""
    median, lanes, lane_w = street.median, street.lanes, street.lane_w
    lane_y = [(sign, -sign * (median + (k + 0.5) * lane_w)) for sign in (1.0, -1.0) for k in range(lanes)]
    for _ in range(vehicles):
        for _try in range(20):
            direction, y = lane_y[int(rng.integers(len(lane_y)))]
            speed = rng.uniform(4.0, 14.0)
            if b.place(
                _choose(rng, MOVING_VEHICLES),
                (rng.uniform(-70, 70), y),
                0 if direction > 0 else 2,
                (direction * speed, 0.0),
                (1.5, 0.2),
            ):
                break
    if street.cross is not None:
        _cross_traffic(b, rng, street)
    for _ in range(cyclists):
        direction, y = lane_y[0 if rng.uniform() < 0.5 else -1]
        y = -direction * (median + lanes * lane_w - 0.7)
        speed = direction * rng.uniform(3.0, 7.0)
        b.place(cyclist(rng), (rng.uniform(-60, 60), y), 0 if direction > 0 else 2, (speed, 0.0), 0.5)


def _cross_traffic(b: _Builder, rng: np.random.Generator, street: _CrossSection) -> None:
    """Cars driving along the cross street."""
    cross = street.cross
    assert cross is not None
    bounds_min, bounds_max = street.bounds
    centre, half = (cross[0] + cross[1]) / 2, (cross[1] - cross[0]) / 2
    for _ in range(int(rng.integers(0, 3))):
        direction = rng.choice([-1.0, 1.0])
        x, y = centre + direction * half / 2, rng.uniform(bounds_min[1] + 8, bounds_max[1] - 8)
        b.place(car(rng), (x, y), 1 if direction > 0 else 3, (0.0, direction * rng.uniform(4, 10)), (0.2, 1.5))


def _pedestrians(b: _Builder, rng: np.random.Generator, street: _CrossSection, pedestrians: int) -> None:
    """Pedestrians on the sidewalks, walking along them or standing; some cross at the cross street."""
    road, walk, cross = street.road, street.walk, street.cross
    for _ in range(pedestrians):
        s = int(rng.integers(2))
        sign = -1.0 if s == 0 else 1.0
        y = sign * (road[s] + rng.uniform(0.5, walk[s] - 0.5))
        speed = 0.0 if rng.uniform() < 0.3 else rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.7)
        b.place(person(rng), (rng.uniform(-70, 70), y), velocity=(speed, 0.0), margin=0.15, z=street.curb)
    if cross is not None and rng.uniform() < 0.7:
        x = cross[0] - 1.5
        for _ in range(int(rng.integers(1, 4))):
            direction = rng.choice([-1.0, 1.0])
            b.place(
                person(rng),
                (x + rng.uniform(-0.8, 0.8), rng.uniform(-road[0], road[1])),
                velocity=(0.0, direction * rng.uniform(0.9, 1.6)),
                margin=0.15,
            )


def _building(b: _Builder, rng: np.random.Generator, x: float, length: float, sign: float, front: float) -> None:
    """A block of ``length`` along x whose facade is ``front`` metres from the road axis:
    a main box, sometimes a set-back upper storey or an annex, sometimes an awning."""
    depth, height = rng.uniform(8, 16), rng.uniform(4, 25)
    parts = [box_part(0, 0, 0, length, depth, height)]
    if rng.uniform() < 0.35 and height > 8:
        parts.append(box_part(length * 0.15, 2.0, height, length * 0.85, depth - 1.0, height + rng.uniform(3, 8)))
    elif rng.uniform() < 0.3:
        parts.append(box_part(length * 0.1, depth, 0, length * 0.7, depth + 3.0, rng.uniform(3, 5)))
    if rng.uniform() < 0.3:  # an awning over the sidewalk side of the ground floor
        parts.append(box_part(length * 0.2, -1.2, 2.8, length * 0.8, 0.0, 3.0))
    # Local +y runs away from the road; on the right side (-y) that is a half turn.
    turns = 0 if sign > 0 else 2
    xy = (x, sign * front) if sign > 0 else (x + length, sign * front)
    b.place([("manmade", parts)], xy, turns, margin=0.0)


def _choose(rng: np.random.Generator, table: tuple[tuple[Template, float], ...]) -> list[tuple[str, list[Part]]]:
    weights = np.array([w for _, w in table])
    template = table[int(rng.choice(len(table), p=weights / weights.sum()))][0]
    return template(rng)
