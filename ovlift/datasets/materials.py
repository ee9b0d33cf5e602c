"""Toy appearance v3: materials shared across classes, a procedural texture per
instance, and per-view camera effects (datasets ``toy`` and ``toy-street``).

Why: up to appearance v2 every instance was painted its class's colour (ScanNet's
benchmark colour +-18), and a 5-nearest-neighbour classifier on point colour alone
scored 77 % mIoU on held-out toy rooms: a student could learn the colour code
instead of anything the methods are about. Here colour alone says little about the
class (``benchmarks/colour_bound.py`` measures it); geometry (sizes, shapes,
heights, context) still says what it said.

Decisions:

- A material (``MATERIALS``) is a palette - ranges of hue, saturation and value,
  overlapping between materials - the textures it may wear and the range of its
  pattern's size in metres. ``INDOOR_MATERIALS`` (ScanNet-20 and the ceiling) and
  ``STREET_MATERIALS`` (nuScenes-16) give each class the materials its surfaces
  draw from (each class at least two, most three or more; each material serves at
  least three classes), the room's walls, floor and ceiling and the street's ground
  included, so that no class owns a colour. A class's materials are listed commonest
  first: the k-th (from 0) is drawn with weight 1 / (k + 1) (walls are mostly paint and
  plaster, roads mostly asphalt, yet some are brick).
- An instance draws two looks: its body's and its trim's. A part is trim when its
  volume is under a quarter of its instance's largest part's (legs, wheels,
  cushions, a tree's trunk, an awning), else body; room faces and ground regions
  are body. A class with trim materials (vehicles' tyres, trees' bark) draws the
  trim from them; otherwise the trim is a second draw from the body's materials,
  or (half the instances) the body's look itself. Pictures (``IMAGE_CLASSES``)
  wear random image content (a gradient and blobs) in their material's palette.
- A look is a material, a texture, two colours (the second from the same palette
  for two-colour patterns - stripes, weave, images - else the first made darker or
  lighter), a pattern size, an orientation, an offset and a noise seed. Instance i
  of a scene draws its looks from its own generator seeded (seed, scene index,
  ``APPEARANCE_STREAM`` of the dataset, i): the layout's draws are untouched.
- Texture coordinates (u, v) are metres on the surface, from the part's min
  corner (the room's and the ground's: the world origin): on a box face (and a
  cylinder's cap) the two axes across its normal, in axis order (so v is height on
  every vertical face); on a cylinder's round side the arc length around the axis
  and the distance along it. They depend on the surface point and its normal only,
  so a mesh vertex and a pixel that sees the same point get the same material
  colour (``SceneLooks.albedo``); the dataset then multiplies by its Lambert
  shading, and a camera image by its frame's gain.
- Textures are deterministic functions of (u, v) and the look: lattice value noise
  from a 32-bit integer hash (the same on every machine), wood grain and planks,
  weave, stripes, tiles, bricks, brushed streaks, images. Patterns are at least a
  few centimetres: the cameras sample surfaces at 1-4 cm per pixel.
- Per view (camera images only; point colours have none): an exposure gain
  exp(U(-0.25, 0.25)) times a white balance exp(U(-0.08, 0.08)) per channel, drawn
  from the frame's own generator (``SceneLooks.camera_gain``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

Appearance = Literal["materials", "class-colour"]
"""``materials``: this module's looks; ``class-colour``: appearance v2, each instance its class's colour."""
TRIM_VOLUME_SHARE = 0.25
"""A part smaller than this share of its instance's largest part wears the trim look."""
EXPOSURE_RANGE, WHITE_BALANCE_RANGE = 0.25, 0.08
"""Per-view camera effects: log gain ranges, overall and per channel."""


@dataclass(frozen=True)
class Material:
    hue: tuple[float, float]
    """Degrees; a range whose start exceeds its end wraps through 0 (reds)."""
    saturation: tuple[float, float]
    value: tuple[float, float]
    textures: tuple[str, ...]
    scale_m: tuple[float, float]
    """Range of the pattern's size (noise cell, plank width, stripe period, tile side, brick length)."""


ANY_HUE = (0.0, 360.0)
MATERIALS: dict[str, Material] = {
    "wood": Material((18, 42), (0.3, 0.7), (0.25, 0.8), ("grain", "planks"), (0.08, 0.25)),
    "paint": Material(ANY_HUE, (0.0, 0.45), (0.45, 0.95), ("plain", "noise"), (0.2, 0.8)),
    "paper": Material(ANY_HUE, (0.05, 0.4), (0.5, 0.95), ("stripes", "weave", "noise"), (0.05, 0.25)),
    "plaster": Material((20, 55), (0.0, 0.18), (0.65, 0.97), ("noise", "plain"), (0.1, 0.5)),
    "concrete": Material(ANY_HUE, (0.0, 0.07), (0.38, 0.75), ("noise",), (0.05, 0.4)),
    "stone": Material((15, 50), (0.0, 0.22), (0.3, 0.9), ("noise", "tiles"), (0.15, 0.6)),
    "ceramic": Material(ANY_HUE, (0.0, 0.3), (0.6, 0.98), ("tiles", "plain"), (0.1, 0.4)),
    "carpet": Material(ANY_HUE, (0.1, 0.55), (0.2, 0.65), ("noise", "stripes"), (0.03, 0.15)),
    "fabric": Material(ANY_HUE, (0.1, 0.7), (0.2, 0.9), ("weave", "stripes", "noise"), (0.04, 0.2)),
    "leather": Material((5, 40), (0.2, 0.75), (0.08, 0.6), ("noise", "plain"), (0.03, 0.12)),
    "metal": Material((190, 230), (0.0, 0.1), (0.35, 0.88), ("brushed", "plain"), (0.05, 0.3)),
    "painted metal": Material(ANY_HUE, (0.0, 0.85), (0.12, 0.95), ("plain",), (0.3, 1.0)),
    "plastic": Material(ANY_HUE, (0.0, 0.85), (0.25, 0.95), ("plain", "noise"), (0.1, 0.5)),
    "glass": Material((170, 215), (0.04, 0.3), (0.3, 0.8), ("plain", "brushed"), (0.2, 0.8)),
    "foliage": Material((55, 140), (0.3, 0.8), (0.15, 0.6), ("noise",), (0.04, 0.3)),
    "bark": Material((15, 40), (0.2, 0.55), (0.12, 0.45), ("grain", "noise"), (0.05, 0.2)),
    "asphalt": Material((190, 250), (0.0, 0.08), (0.14, 0.42), ("noise",), (0.03, 0.3)),
    "paving": Material((5, 45), (0.0, 0.3), (0.4, 0.8), ("tiles", "bricks"), (0.15, 0.5)),
    "brick": Material((355, 25), (0.35, 0.7), (0.3, 0.65), ("bricks",), (0.2, 0.3)),
    "rubber": Material(ANY_HUE, (0.0, 0.08), (0.04, 0.18), ("noise", "plain"), (0.02, 0.1)),
}
"""The toy world's materials (see the module docstring)."""
TWO_COLOUR = frozenset({"stripes", "weave", "image"})
"""Textures whose second colour is a second draw from the palette (else a shade of the first)."""
UPRIGHT = frozenset({"bricks", "image"})
"""Textures never turned (bricks lie in courses; pictures hang upright)."""


class ClassMaterials(NamedTuple):
    body: tuple[str, ...]
    trim: tuple[str, ...] = ()
    """Empty: the trim draws from ``body`` (or is the body's look, half the time)."""


INDOOR_MATERIALS: dict[str, ClassMaterials] = {
    "wall": ClassMaterials(("paint", "plaster", "paper", "concrete", "brick", "wood")),
    "floor": ClassMaterials(("wood", "carpet", "ceramic", "concrete", "stone")),
    "ceiling": ClassMaterials(("plaster", "paint", "concrete", "wood", "paper")),
    "cabinet": ClassMaterials(("wood", "paint", "metal", "plastic", "painted metal")),
    "bed": ClassMaterials(("fabric", "wood", "leather", "carpet")),
    "chair": ClassMaterials(("wood", "fabric", "metal", "plastic", "leather")),
    "sofa": ClassMaterials(("fabric", "leather", "carpet", "plastic")),
    "table": ClassMaterials(("wood", "metal", "glass", "stone", "plastic")),
    "door": ClassMaterials(("wood", "paint", "metal", "glass")),
    "window": ClassMaterials(("glass", "metal", "paint")),
    "bookshelf": ClassMaterials(("wood", "paint", "metal", "paper")),
    "picture": ClassMaterials(("paint", "paper", "fabric", "foliage")),
    "counter": ClassMaterials(("stone", "wood", "ceramic", "concrete", "metal")),
    "desk": ClassMaterials(("wood", "metal", "plastic", "glass", "paint")),
    "curtain": ClassMaterials(("fabric", "plastic", "paper")),
    "refrigerator": ClassMaterials(("metal", "painted metal", "plastic", "paint")),
    "shower curtain": ClassMaterials(("plastic", "fabric", "glass")),
    "toilet": ClassMaterials(("ceramic", "plastic", "stone")),
    "sink": ClassMaterials(("ceramic", "metal", "stone")),
    "bathtub": ClassMaterials(("ceramic", "plastic", "stone", "metal")),
    "otherfurniture": ClassMaterials(("wood", "metal", "plastic", "fabric", "leather", "paint")),
}
"""ScanNet-20's classes and the toy room's ceiling -> the materials their surfaces draw from
(commonest first)."""
VEHICLE_BODY = ("painted metal", "metal", "plastic")
TYRES = ("rubber", "metal")
STREET_MATERIALS: dict[str, ClassMaterials] = {
    "barrier": ClassMaterials(("concrete", "plastic", "painted metal", "metal", "wood", "stone")),
    "bicycle": ClassMaterials(VEHICLE_BODY, TYRES),
    "bus": ClassMaterials(VEHICLE_BODY, TYRES),
    "car": ClassMaterials(VEHICLE_BODY, TYRES),
    "construction vehicle": ClassMaterials(VEHICLE_BODY, (*TYRES, "painted metal")),
    "motorcycle": ClassMaterials((*VEHICLE_BODY, "leather"), TYRES),
    "person": ClassMaterials(("fabric", "leather", "plastic"), ("fabric", "leather")),
    "traffic cone": ClassMaterials(("plastic", "rubber", "painted metal")),
    "trailer": ClassMaterials(("painted metal", "metal", "fabric", "wood"), TYRES),
    "truck": ClassMaterials(("painted metal", "metal", "fabric", "plastic"), TYRES),
    "drivable surface": ClassMaterials(("asphalt", "concrete", "paving", "brick")),
    "other flat": ClassMaterials(("paving", "concrete", "foliage", "bark", "asphalt", "brick", "stone")),
    "sidewalk": ClassMaterials(("paving", "concrete", "asphalt", "brick", "stone")),
    "terrain": ClassMaterials(("foliage", "bark", "stone")),
    "manmade": ClassMaterials(
        ("plaster", "brick", "concrete", "glass", "metal", "painted metal", "wood", "stone", "paint")
    ),
    "vegetation": ClassMaterials(("foliage",), ("bark",)),
}
"""nuScenes-16's classes -> the materials their surfaces draw from, commonest first (trims:
tyres, trunks)."""
IMAGE_CLASSES = frozenset({"picture"})
"""Classes whose body shows random image content."""


@dataclass(frozen=True, eq=False)
class Look:
    """How one surface looks: a material worn with one texture (see the module docstring).
    Compared by identity (its fields hold arrays)."""

    material: str
    texture: str
    colors: np.ndarray
    """(2, 3) RGB 0-255: the base colour and the pattern's second colour."""
    scale: float
    """Pattern size, metres."""
    turn: bool
    """Swap u and v (grain, stripes and planks run across instead of along)."""
    offset: np.ndarray
    """(2,) metres added to (u, v): instances of one look do not line up."""
    seed: int
    """Seeds the lattice noise."""
    blobs: np.ndarray = field(default_factory=lambda: np.empty((0, 6)))
    """(K, 6) image content: u, v, radius (metres), RGB."""

    def albedo(self, uv: np.ndarray) -> np.ndarray:
        """(N, 3) float RGB 0-255 at texture coordinates ``uv`` (N, 2)."""
        if self.texture == "image":
            return _image(self, uv[:, 0], uv[:, 1])
        u, v = (uv + self.offset).T
        if self.turn:
            u, v = v, u
        weight, jitter = TEXTURES[self.texture](self, u, v)
        c0, c1 = self.colors
        return np.clip((c0 + weight[:, None] * (c1 - c0)) * (1 + jitter)[:, None], 0, 255)


@dataclass
class SceneLooks:
    """The looks of a scene's instances and what texturing needs of its parts."""

    looks: list[Look | None]
    """Two per instance, body then trim (None: no surface, the street's sky)."""
    part_min: np.ndarray
    """(P, 3) parts' min corners (texture origins)."""
    part_axis: np.ndarray
    """(P,) -1 for a box, else the axis of the cylinder inscribed in the part's box."""
    part_radius: np.ndarray
    """(P,) cylinder radius (unused for boxes)."""
    part_trim: np.ndarray
    """(P,) bool: the part wears its instance's trim look."""
    camera_seed: tuple[int, ...]
    """Seeds the per-view camera effects, with the frame index."""

    def albedo(self, instance: np.ndarray, part: np.ndarray, position: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """(N, 3) float RGB 0-255 of surface points: ``instance`` and ``part`` (-1: a room
        face or the ground) of each, its ``position`` and ``normal`` (any length)."""
        part = np.asarray(part, dtype=np.int64)  # -1 picks the padding: no offset, a plane, body
        lo = np.concatenate([self.part_min, np.zeros((1, 3))])[part]
        axis = np.append(self.part_axis, -1)[part]
        uv = surface_uv(position, normal, lo, axis, np.append(self.part_radius, 0.0)[part])
        trim = np.append(self.part_trim, False)[part]
        which = 2 * instance.astype(np.int64) + trim
        out = np.zeros((len(which), 3))
        order = np.argsort(which, kind="stable")
        looks, starts = np.unique(which[order], return_index=True)
        for index, chosen in zip(looks, np.split(order, starts[1:])):
            look = self.looks[index]
            if look is not None:
                out[chosen] = look.albedo(uv[chosen])
        return out

    def camera_gain(self, frame: int) -> np.ndarray:
        """(3,) per-channel gain of frame ``frame``: exposure times white balance."""
        rng = np.random.default_rng([*self.camera_seed, frame])
        exposure = rng.uniform(-EXPOSURE_RANGE, EXPOSURE_RANGE)
        return np.exp(exposure + rng.uniform(-WHITE_BALANCE_RANGE, WHITE_BALANCE_RANGE, 3))


def draw_scene_looks(
    classes: list[str | None],
    table: dict[str, ClassMaterials],
    parts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    seed: tuple[int, ...],
    camera_seed: tuple[int, ...],
) -> SceneLooks:
    """The looks of a scene whose instance i has class ``classes[i]`` (None: no surface),
    each drawn from a generator seeded ``(*seed, i)``. ``parts``: part_min, part_max,
    part_axis, part_instance; ``table``: class -> materials."""
    part_min, part_max, part_axis, part_instance = parts
    looks: list[Look | None] = []
    for i, name in enumerate(classes):
        if name is None:
            looks += [None, None]
            continue
        looks += draw_instance_looks(np.random.default_rng([*seed, i]), table[name], name in IMAGE_CLASSES)
    size = part_max - part_min
    volume = np.prod(size, axis=1) * np.where(part_axis >= 0, math.pi / 4, 1.0)
    largest = np.zeros(len(classes))
    np.maximum.at(largest, part_instance, volume)
    radius = np.where(part_axis >= 0, (size.sum(1) - size[np.arange(len(size)), part_axis.clip(0)]) / 4, 0.0)
    return SceneLooks(
        looks=looks,
        part_min=part_min,
        part_axis=part_axis,
        part_radius=radius,
        part_trim=volume < TRIM_VOLUME_SHARE * largest[part_instance],
        camera_seed=camera_seed,
    )


def draw_instance_looks(rng: np.random.Generator, materials: ClassMaterials, image: bool) -> tuple[Look, Look]:
    """(body, trim) looks of one instance (the module docstring's rules)."""
    body = draw_look(rng, _pick(rng, materials.body), image)
    if materials.trim:
        return body, draw_look(rng, _pick(rng, materials.trim))
    if rng.uniform() < 0.5:
        return body, body
    return body, draw_look(rng, _pick(rng, materials.body))


def _pick(rng: np.random.Generator, names: tuple[str, ...]) -> str:
    """One of ``names`` (commonest first): the k-th with weight 1 / (k + 1)."""
    weights = 1.0 / np.arange(1, len(names) + 1)
    return names[rng.choice(len(names), p=weights / weights.sum())]


def draw_look(rng: np.random.Generator, material: str, image: bool = False) -> Look:
    """A look of ``material``; ``image``: with random image content."""
    m = MATERIALS[material]
    texture = "image" if image else m.textures[rng.integers(len(m.textures))]
    base = _draw_hsv(rng, m)
    if texture in TWO_COLOUR:
        second = _draw_hsv(rng, m)
    else:  # a shade of the base: darker, or lighter where the base is dark
        contrast = rng.uniform(0.12, 0.35)
        second = base.copy()
        second[2] = base[2] * (1 - contrast) if base[2] > 0.3 else min(1.0, base[2] * (1 + contrast) + 0.08)
    scale = float(np.exp(rng.uniform(*np.log(m.scale_m))))
    blobs = _draw_blobs(rng) if texture == "image" else np.empty((0, 6))
    return Look(
        material=material,
        texture=texture,
        colors=hsv_to_rgb(np.stack([base, second])),
        scale=scale,
        turn=bool(rng.uniform() < 0.5) and texture not in UPRIGHT,
        offset=np.zeros(2) if texture == "image" else rng.uniform(0, 10, 2),
        seed=int(rng.integers(1 << 31)),
        blobs=blobs,
    )


def _draw_hsv(rng: np.random.Generator, m: Material) -> np.ndarray:
    """(3,) hue (degrees), saturation, value from the material's palette."""
    lo, hi = m.hue
    hue = (lo + rng.uniform(0, (hi - lo) % 360 or 360)) % 360
    return np.array([hue, rng.uniform(*m.saturation), rng.uniform(*m.value)])


def _draw_blobs(rng: np.random.Generator) -> np.ndarray:
    """(K, 6) blobs of an image: centre u, v in [0, 1] m, radius, RGB of any colour."""
    k = int(rng.integers(3, 8))
    hsv = np.stack([rng.uniform(0, 360, k), rng.uniform(0.1, 0.9, k), rng.uniform(0.15, 0.95, k)], axis=1)
    return np.concatenate([rng.uniform(0, 1, (k, 2)), rng.uniform(0.04, 0.25, (k, 1)), hsv_to_rgb(hsv)], axis=1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """(..., 3) hue in degrees, saturation and value in [0, 1] -> RGB 0-255."""
    h, s, v = hsv[..., 0] / 60.0, hsv[..., 1], hsv[..., 2]
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None]) % 6
    return 255.0 * (v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1))


def surface_uv(
    position: np.ndarray, normal: np.ndarray, lo: np.ndarray, axis: np.ndarray, radius: np.ndarray
) -> np.ndarray:
    """(N, 2) texture coordinates in metres (the module docstring): ``lo`` (N, 3) the
    surface's origin, ``axis`` (N,) -1 for a plane or a box, else its cylinder's axis,
    ``radius`` (N,) the cylinder's radius."""
    rel = position - lo
    facing = np.abs(normal).argmax(axis=1)
    rows = np.arange(len(rel))
    uv = np.stack([rel[rows, np.where(facing == 0, 1, 0)], rel[rows, np.where(facing == 2, 1, 2)]], axis=1)
    side = (axis >= 0) & (facing != axis)
    if side.any():
        a, r, p = axis[side], radius[side], rel[side]
        s = np.arange(len(a))
        angle = np.arctan2(p[s, (a + 2) % 3] - r, p[s, (a + 1) % 3] - r)
        uv[side] = np.stack([(angle + math.pi) * r, p[s, a]], axis=1)
    return uv


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) per integer lattice point (ix, iy): a 32-bit integer hash."""
    mask = np.uint64(0xFFFFFFFF)
    x = ix.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B1)
    x ^= iy.astype(np.int64).astype(np.uint64) * np.uint64(0x85EBCA77)
    x = (x ^ np.uint64(seed) * np.uint64(0xC2B2AE3D)) & mask
    for shift, multiplier in ((15, 0x2C1B3C6D), (12, 0x297A2D39)):
        x = ((x ^ (x >> np.uint64(shift))) * np.uint64(multiplier)) & mask
    x ^= x >> np.uint64(15)
    return x.astype(np.float64) / 2.0**32


def value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1] with one random value per unit lattice point."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    su, sv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    iu, iv = iu.astype(np.int64), iv.astype(np.int64)
    a, b = _hash(iu, iv, seed), _hash(iu + 1, iv, seed)
    c, d = _hash(iu, iv + 1, seed), _hash(iu + 1, iv + 1, seed)
    return a + (b - a) * su + (c - a) * sv + (a - b - c + d) * su * sv


def fractal_noise(u: np.ndarray, v: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """Value noise summed over octaves (each twice as fine, half as strong), in [0, 1]."""
    total = sum(0.5**k * value_noise(u * 2**k, v * 2**k, seed + k) for k in range(octaves))
    return total / sum(0.5**k for k in range(octaves))


Texture = Callable[[Look, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(look, u, v) -> (weight of the second colour, relative brightness change), each (N,)."""


def _plain(look: Look, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearly uniform: a faint, large blotch."""
    return 0.3 * fractal_noise(u / (3 * look.scale), v / (3 * look.scale), look.seed, 2), np.zeros(len(u))


def _noise(look: Look, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mottled: fractal noise of the look's cell size, contrast stretched."""
    n = fractal_noise(u / look.scale, v / look.scale, look.seed)
    return np.clip((n - 0.5) * 1.5 + 0.5, 0, 1), np.zeros(len(u))


def _brushed(look: Look, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Streaks along u (brushed metal, reflections on glass)."""
    return 0.8 * fractal_noise(u / (6 * look.scale), v / (0.25 * look.scale), look.seed), np.zeros(len(u))


def _grain(look: Look, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wood grain along u: wavy bands across v, warped by noise."""
    rings = v / (look.scale / 3) + 3 * fractal_noise(u / (2 * look.scale), v / look.scale, look.seed)
    fine = fractal_noise(u / (0.5 * look.scale), v / (0.05 * look.scale), look.seed + 7, 2)
    return 0.7 * (0.5 + 0.5 * np.sin(2 * math.pi * rings)) ** 2 + 0.3 * fine, np.zeros(len(u))


def _planks(look: Look, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boards ``scale`` wide along u, each its own shade, with grain and dark seams."""
    board = np.floor(v / look.scale)
    grain, _ = _grain(look, u + 37.0 * board, v)
    seam = (v / look.scale - board) < 0.05
    return np.where(seam, 1.0, 0.7 * grain), 0.3 * (_hash(board, board * 0, look.seed) - 0.5)


def _weave(look: Look, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gingham: bands of the second colour along both axes, darker where they cross."""
    a = (u / look.scale) % 1 < 0.5
    b = (v / look.scale) % 1 < 0.5
    return 0.5 * (a.astype(float) + b), 0.1 * (fractal_noise(u / 0.05, v / 0.05, look.seed, 1) - 0.5)


def _stripes(look: Look, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stripes across u of period ``scale`` and a duty drawn from the seed."""
    duty = 0.25 + 0.5 * _hash(np.zeros(1), np.zeros(1), look.seed)[0]
    return ((u / look.scale) % 1 < duty).astype(float), np.zeros(len(u))


def _tiles(look: Look, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square tiles of side ``scale``, each its own shade, with grout of the second colour."""
    cu, cv = np.floor(u / look.scale), np.floor(v / look.scale)
    fu, fv = u / look.scale - cu, v / look.scale - cv
    grout = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) < 0.04
    return grout.astype(float), 0.25 * (_hash(cu, cv, look.seed) - 0.5)


def _bricks(look: Look, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bricks ``scale`` long and a third as high in stretcher bond, mortar of the second colour."""
    height = look.scale / 3
    row = np.floor(v / height)
    along = u / look.scale + 0.5 * (row % 2)
    column = np.floor(along)
    mortar = (along - column < 0.05) | (v / height - row < 0.12)
    return mortar.astype(float), 0.35 * (_hash(column, row, look.seed) - 0.5)


def _image(look: Look, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N, 3) picture content: a gradient from the first colour to the second, under blobs
    of any colour (the blobs lie in the first metre of u and v)."""
    angle = 2 * math.pi * _hash(np.zeros(1), np.ones(1), look.seed)[0]
    t = np.clip(0.5 + (u - 0.5) * math.cos(angle) + (v - 0.5) * math.sin(angle), 0, 1)
    color = look.colors[0] + t[:, None] * (look.colors[1] - look.colors[0])
    for bu, bv, radius, *rgb in look.blobs:
        weight = np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * radius**2))
        color = color + weight[:, None] * (np.array(rgb) - color)
    return np.clip(color, 0, 255)


TEXTURES: dict[str, Texture] = {
    "plain": _plain,
    "noise": _noise,
    "brushed": _brushed,
    "grain": _grain,
    "planks": _planks,
    "weave": _weave,
    "stripes": _stripes,
    "tiles": _tiles,
    "bricks": _bricks,
}
"""Texture kind -> pattern (``image`` is drawn by ``_image``)."""
