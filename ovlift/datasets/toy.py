"""Deterministic synthetic indoor scenes from a seed (dataset ``toy``).

A room (floor, four walls, ceiling) holds furniture of ScanNet-20 classes made of
axis-aligned boxes and cylinders (see ``furniture.py``). The scene's mesh is what
a reconstruction of the room would give: one welded triangle mesh of the surfaces
that can be seen, with vertex normals as ScanNet computes them and seeded
reconstruction noise; its vertices are the scene's points, with class labels and
instance ids. A camera loop inside the room looks across it; colour, metric depth
(with seeded sensor noise) and per-pixel label/instance images are rendered by
exact ray casting against the solids, so visibility and occlusion are ground
truth. Surfaces wear materials shared across classes, textured per instance, and
each frame has its own exposure and white balance (appearance v3, ``materials.py``;
``appearance: class-colour`` paints each instance its class's colour, as v2 did).

The mesh, step by step (``_mesh``):

- every box face not listed as hidden is a grid of at most ``vertex_spacing_m``;
  a cylinder is a grid on its round side and rings on its caps, at the same
  spacing. Samples along an axis are shared by every face of a solid, so the
  faces of a box, the room's walls, floor and ceiling, and a cylinder's side and
  caps meet at the same vertices. A box's (and the room's) samples also run
  through the bounds of the boxes it touches, so a contact is a grid line on both
  sides (``_samples``);
- triangles are wound so that their normals point out of the solids and into
  the room;
- triangles lying inside or on another solid are dropped: where solids touch
  (a cabinet's back on the wall, a leg under a table top, the floor under a
  bed), that surface is inside the union of solids and never seen;
- vertices at the same position (rounded to ``WELD_M``) become one vertex,
  everywhere: the room is one connected shell, the faces of a part are one
  surface, and parts join where their grids coincide (along contacts, mostly). A welded vertex keeps the instance
  and the part (whose look it wears) of the first solid that produced it, in the order room (walls, then floor,
  then ceiling, as in ``FACES``), then the furniture parts as placed: where
  furniture touches the room, the wall or floor wins. Triangles that welding made
  degenerate are removed;
- each vertex moves along its normal by N(0, ``surface_noise_m``) (seeded), and
  the normals are computed again from the noisy mesh, as ScanNet's come from its
  noisy reconstruction: per vertex, the area-weighted sum of the normals of its
  triangles, normalised.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field, field_validator

from ovlift.cache_schema import IGNORE_LABEL, canonical_json
from ovlift.config import FrozenConfig
from ovlift.datasets.base import Dataset, Frame, SceneSource
from ovlift.datasets.furniture import CLASS_COLORS, FACES, FLOOR_TEMPLATES, WALL_TEMPLATES, Part, rotate_part
from ovlift.datasets.materials import INDOOR_MATERIALS, Appearance, SceneLooks, draw_scene_looks
from ovlift.kernels.raycast import BOX, ROOM_FACES, cast_rays, cylinder_radius, pixel_rays
from ovlift.vocabularies import SCANNET20

GENERATOR_VERSION = "3"
"""Changes whenever the same config generates a different scene (it is part of the fingerprint).
3: appearance v3 (``materials.py``); 2: welded meshes."""
WELD_M = 1e-6
"""Mesh vertices whose positions round to the same multiple of this are one vertex."""
SURFACE_NOISE_STREAM, DEPTH_NOISE_STREAM, APPEARANCE_STREAM, EXPOSURE_STREAM = 1, 2, 3, 4
"""Noise and appearance draw from generators of their own, seeded (seed, scene index,
stream[, instance or frame]), so neither changes the layout drawn from (seed, scene index)."""
KNOT_GAP_M = 1e-3
"""Grid lines of a solid closer than this are one (furniture parts are centimetres apart)."""
MIN_SEGMENTS = 12
"""Fewest segments around a cylinder, however large the vertex spacing."""
LIGHT = np.array([0.35, 0.55, 0.76]) / np.linalg.norm([0.35, 0.55, 0.76])
ROOM_FACE_CLASSES = ("wall", "wall", "wall", "wall", "floor", "ceiling")


class ToyConfig(FrozenConfig):
    num_scenes: int = Field(4, ge=1)
    """Number of scenes, named ``toy_0000``, ``toy_0001``, ..."""
    seed: int = 0
    """Base seed; scene i is generated from (seed, i)."""
    num_floor_objects: int = Field(6, ge=0)
    """Furniture standing on the floor (fewer if the room runs out of space)."""
    floor_classes: tuple[str, ...] | None = None
    """Classes the floor objects are drawn from (None: every floor template)."""
    num_wall_objects: int = Field(3, ge=0)
    """Doors, windows, pictures and curtains on the walls."""
    num_frames: int = Field(12, ge=1)
    """Camera poses on a loop inside the room."""
    image_height: int = Field(240, ge=8)
    """Rendered image height in pixels."""
    image_width: int = Field(320, ge=8)
    """Rendered image width in pixels."""
    fov_deg: float = Field(70.0, gt=10, lt=170)
    """Horizontal field of view."""
    vertex_spacing_m: float = Field(0.05, gt=0)
    """Largest distance between neighbouring mesh vertices (the point density)."""
    room_width_m: tuple[float, float] = (4.5, 7.0)
    """Range the room's x extent is drawn from."""
    room_depth_m: tuple[float, float] = (4.0, 6.0)
    """Range the room's y extent is drawn from."""
    room_height_m: tuple[float, float] = (2.6, 3.0)
    """Range the room's height is drawn from."""
    surface_noise_m: float = Field(0.003, ge=0)
    """Reconstruction noise: each mesh vertex moves along its normal by N(0, this) metres
    (seeded by the scene); normals are computed from the noisy mesh."""
    depth_noise: float = Field(0.002, ge=0)
    """Sensor noise: each rendered depth is multiplied by 1 + N(0, this) (seeded per
    frame); colour, label and instance images stay exact."""
    appearance: Appearance = "materials"
    """``materials``: appearance v3 (``materials.py``: materials shared across classes,
    textures, per-view exposure and white balance); ``class-colour``: appearance v2, each
    instance its class's ScanNet colour +-18 (colour alone gives the class away)."""

    @field_validator("floor_classes")
    @classmethod
    def _known_classes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = sorted(set(value or ()) - set(FLOOR_TEMPLATES))
        if unknown or value == ():
            raise ValueError(f"floor_classes {unknown or '()'} must be non-empty, from {sorted(FLOOR_TEMPLATES)}")
        return value


@dataclass
class ToyScene:
    """Geometry and cameras of one toy scene (everything needed to render it)."""

    room_min: np.ndarray
    room_max: np.ndarray
    part_min: np.ndarray
    """(P, 3) bounding boxes of the furniture parts."""
    part_max: np.ndarray
    part_axis: np.ndarray
    """(P,) ``BOX`` (-1) for a box, else the axis of the cylinder inscribed in the part's box."""
    part_instance: np.ndarray
    """(P,) instance id of each part."""
    instance_class: list[str]
    """Class name per instance; instances 0-5 are the room faces."""
    instance_color: np.ndarray
    """(I, 3) base colour per instance (with ``looks``: its body look's first colour)."""
    points: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    point_instance: np.ndarray
    intrinsics: np.ndarray
    cam_to_world: np.ndarray
    """(T, 4, 4) poses."""
    height: int
    width: int
    depth_noise: float = 0.0
    """Relative standard deviation of the rendered depth's noise."""
    noise_seed: tuple[int, ...] = ()
    """Seeds the depth noise, with the frame index."""
    looks: SceneLooks | None = None
    """Appearance v3 (None: v2, ``instance_color`` flat)."""
    point_albedo: np.ndarray | None = None
    """(N, 3) material colour of each point (with ``looks``), of the surface before its noise."""
    point_part: np.ndarray | None = None
    """(N,) the part each point lies on and wears the look of (-1: a room face); where parts
    meet, the first solid's, as for its instance."""

    @property
    def instance_label(self) -> np.ndarray:
        return np.array(
            [SCANNET20.index(c) if c in SCANNET20.classes else IGNORE_LABEL for c in self.instance_class],
            dtype=np.int16,
        )

    def hit_instance(self) -> np.ndarray:
        """Instance of each ray-cast hit index (parts, then the six room faces)."""
        return np.concatenate([self.part_instance, np.arange(ROOM_FACES)])

    def render(self, index: int) -> Frame:
        pose = torch.from_numpy(self.cam_to_world[index]).float()
        intrinsics = torch.from_numpy(self.intrinsics).float()
        origins, directions = pixel_rays(intrinsics, pose, self.height, self.width)
        t, hit, normal = cast_rays(origins, directions, *self._solids(torch.float32))
        color, instance = self.surface_colors(
            origins.numpy(), directions.numpy(), t.numpy(), hit.numpy(), normal.numpy()
        )
        if self.looks is not None:
            color = color * self.looks.camera_gain(index)
        color = np.clip(color, 0, 255).round().astype(np.uint8)
        shape = (self.height, self.width)
        depth = t.numpy().astype(np.float64)
        if self.depth_noise > 0:
            rng = np.random.default_rng([*self.noise_seed, index])
            depth *= 1 + rng.normal(0, self.depth_noise, depth.shape)
        return Frame(
            name=f"frame-{index:06d}",
            color=color.reshape(*shape, 3),
            depth=depth.astype(np.float32).reshape(shape),
            intrinsics=self.intrinsics.copy(),
            cam_to_world=self.cam_to_world[index].copy(),
            labels=self.instance_label[instance].reshape(shape),
            instances=instance.astype(np.int32).reshape(shape),
        )

    def surface_colors(
        self, origins: np.ndarray, directions: np.ndarray, t: np.ndarray, hit: np.ndarray, normal: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Colour (float RGB, before the camera's gain) and instance of ``cast_rays``' hits
        (t, hit, normal) of rays ``origins + t directions``: the material colour at the
        point hit times Lambert shading (v2: the instance's colour times the shading)."""
        instance = self.hit_instance()[hit]
        shade = _shade(normal)
        if self.looks is None:
            return self.instance_color[instance] * shade[:, None], instance
        part = np.where(hit < len(self.part_min), hit, -1)
        albedo = self.looks.albedo(instance, part, origins + t[:, None] * directions, normal)
        return albedo * shade[:, None], instance

    def first_hit_distance(self, origin: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """For rays from ``origin`` to each target, the ray parameter of the first hit
        (1.0 means the target itself is the first surface reached)."""
        o = torch.from_numpy(np.broadcast_to(origin, targets.shape).astype(np.float64))
        d = torch.from_numpy(targets.astype(np.float64)) - o
        t, _, _ = cast_rays(o, d, *self._solids(torch.float64))
        return t.numpy()

    def _solids(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """``cast_rays``' arguments after the rays."""
        arrays = (self.part_min, self.part_max, self.room_min, self.room_max)
        return (*(torch.from_numpy(a).to(dtype) for a in arrays), torch.from_numpy(self.part_axis))


class ToyDataset(Dataset[ToyConfig]):
    """Synthetic rooms; see the module docstring."""

    name = "toy"

    def scene_ids(self) -> list[str]:
        return [f"toy_{i:04d}" for i in range(self.config.num_scenes)]

    def _index(self, scene_id: str) -> int:
        if scene_id not in self.scene_ids():
            raise KeyError(f"toy dataset has no scene '{scene_id}' (num_scenes={self.config.num_scenes})")
        return int(scene_id.split("_")[1])

    def fingerprint(self, scene_id: str) -> str:
        payload = {"generator": GENERATOR_VERSION, "config": self.config.normalised(), "scene": scene_id}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def build(self, scene_id: str) -> ToyScene:
        return make_toy_scene(self.config, self._index(scene_id))

    def load(self, scene_id: str) -> SceneSource:
        scene = self.build(scene_id)
        labels = scene.instance_label[scene.point_instance]
        return SceneSource(
            scene_id=scene_id,
            points=scene.points,
            colors=_point_colors(scene),
            normals=scene.normals,
            labels=labels,
            instances=scene.point_instance.astype(np.int32),
            faces=scene.faces,
            class_names=SCANNET20.classes,
            frame_names=[f"frame-{i:06d}" for i in range(len(scene.cam_to_world))],
            read_frame=scene.render,
        )


def make_toy_scene(config: ToyConfig, index: int) -> ToyScene:
    """Scene ``index``. The room, its camera loop, its furniture and then its appearance
    are drawn from (seed, index) in that order; the surface noise from a stream of its own."""
    rng = np.random.default_rng([config.seed, index])
    size = np.array(
        [rng.uniform(*config.room_width_m), rng.uniform(*config.room_depth_m), rng.uniform(*config.room_height_m)]
    )
    room_min, room_max = np.zeros(3), size
    cam_to_world = _camera_loop(rng, size, config.num_frames)
    classes, parts = _furnish(rng, config, size, cam_to_world)
    part_min, part_max, part_axis, part_instance = _part_arrays(parts)
    solids = (part_min, part_max, part_axis, room_min, room_max)
    points, normals, faces, point_instance, point_part = _mesh(parts, solids, config.vertex_spacing_m)
    colors, looks = _appearance(config.appearance, rng, classes, parts, (config.seed, index))
    point_albedo = None if looks is None else looks.albedo(point_instance, point_part, points, normals)
    if config.surface_noise_m > 0:
        noise = np.random.default_rng([config.seed, index, SURFACE_NOISE_STREAM])
        points = points + normals * noise.normal(0, config.surface_noise_m, len(points))[:, None]
        normals = _vertex_normals(points, faces)
    return ToyScene(
        room_min=room_min,
        room_max=room_max,
        part_min=part_min,
        part_max=part_max,
        part_axis=part_axis,
        part_instance=part_instance,
        instance_class=classes,
        instance_color=colors,
        points=points.astype(np.float32),
        normals=normals.astype(np.float32),
        faces=faces.astype(np.int32),
        point_instance=point_instance,
        intrinsics=_intrinsics(config.image_height, config.image_width, config.fov_deg),
        cam_to_world=cam_to_world,
        height=config.image_height,
        width=config.image_width,
        depth_noise=config.depth_noise,
        noise_seed=(config.seed, index, DEPTH_NOISE_STREAM),
        looks=looks,
        point_albedo=None if point_albedo is None else point_albedo.astype(np.float32),
        point_part=point_part,
    )


def _furnish(
    rng: np.random.Generator, config: ToyConfig, size: np.ndarray, cam_to_world: np.ndarray
) -> tuple[list[str], list[tuple[Part, int]]]:
    """The room's instance classes (its faces, then the furniture placed) and the
    furniture's world-frame parts with their instances: floor objects, then wall objects."""
    classes: list[str] = list(ROOM_FACE_CLASSES)
    parts: list[tuple[Part, int]] = []  # (world-frame part, instance)
    footprints: list[np.ndarray] = []  # (2, 2) lo/hi in xy, floor objects
    floor_names = list(config.floor_classes or FLOOR_TEMPLATES)
    for _ in range(config.num_floor_objects):
        name = floor_names[rng.integers(len(floor_names))]
        local = FLOOR_TEMPLATES[name](rng)
        placed = _place_on_floor(rng, local, size, footprints, cam_to_world[:, :2, 3])
        if placed is not None:
            classes.append(name)
            parts += [(p, len(classes) - 1) for p in placed]
    wall_names = list(WALL_TEMPLATES)
    wall_boxes: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(config.num_wall_objects):
        name = wall_names[rng.integers(len(wall_names))]
        local = WALL_TEMPLATES[name](rng)
        placed = _place_on_wall(rng, local, size, [p for p, _ in parts], wall_boxes)
        if placed is not None:
            classes.append(name)
            parts += [(p, len(classes) - 1) for p in placed]
    return classes, parts


def _part_arrays(parts: list[tuple[Part, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``ToyScene``'s part_min, part_max, part_axis and part_instance of (part, instance) pairs."""
    part_min = np.array([p.lo for p, _ in parts]).reshape(-1, 3)
    part_max = np.array([p.hi for p, _ in parts]).reshape(-1, 3)
    part_axis = np.array([BOX if p.axis is None else p.axis for p, _ in parts], dtype=np.int64)
    return part_min, part_max, part_axis, np.array([i for _, i in parts], dtype=np.int64)


def _appearance(
    appearance: Appearance,
    rng: np.random.Generator,
    classes: list[str],
    parts: list[tuple[Part, int]],
    seed: tuple[int, ...],
) -> tuple[np.ndarray, SceneLooks | None]:
    """Base colour per instance and the looks of a room (or an object view) seeded by
    ``seed``: ``materials`` draws them from streams of their own (``materials.py``), and
    the four walls (instances 0-3) wear the first wall's looks, as a room's walls do;
    ``class-colour`` (appearance v2) draws class colours from the layout's ``rng``, after
    the layout, and no looks."""
    if appearance == "class-colour":
        return _instance_colors(rng, classes), None
    looks = draw_scene_looks(
        list(classes), INDOOR_MATERIALS, _part_arrays(parts), (*seed, APPEARANCE_STREAM), (*seed, EXPOSURE_STREAM)
    )
    walls = ROOM_FACE_CLASSES.count("wall")
    looks.looks[: 2 * walls] = looks.looks[:2] * walls
    return np.array([look.colors[0] for look in looks.looks[::2]]), looks


def _instance_colors(rng: np.random.Generator, classes: list[str]) -> np.ndarray:
    """(I, 3) base colour per instance: its class's colour plus a uniform draw (appearance v2).
    Drawn after the layout, so that the layout does not depend on it."""
    colors = np.array([CLASS_COLORS[c] for c in classes], dtype=np.float64)
    return np.clip(colors + rng.uniform(-18, 18, size=colors.shape), 0, 255)


def _intrinsics(height: int, width: int, fov_deg: float) -> np.ndarray:
    """A centred pinhole camera with a horizontal field of view of ``fov_deg``."""
    focal = width / 2 / math.tan(math.radians(fov_deg) / 2)
    return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])


def _camera_loop(rng: np.random.Generator, size: np.ndarray, num_frames: int) -> np.ndarray:
    """Poses on an ellipse around the room centre, each looking across the room."""
    centre = np.array([size[0] / 2, size[1] / 2, 0.0])
    start = rng.uniform(0, 2 * math.pi)
    poses = []
    for i in range(num_frames):
        angle = start + 2 * math.pi * i / num_frames
        radial = np.array([math.cos(angle), math.sin(angle), 0.0])
        eye = centre + radial * np.array([0.28 * size[0], 0.28 * size[1], 0]) + [0, 0, 1.5 + 0.1 * math.sin(3 * angle)]
        side = np.array([-radial[1], radial[0], 0.0]) * 0.25 * math.sin(2 * angle) * min(size[:2])
        target = centre - radial * 0.35 * size[:2].min() + side + [0, 0, 0.7]
        poses.append(_look_at(eye, target))
    return np.stack(poses)


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def _bounds(parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
    return np.min([p.lo for p in parts], axis=0), np.max([p.hi for p in parts], axis=0)


def _place_on_floor(
    rng: np.random.Generator,
    local: list[Part],
    size: np.ndarray,
    footprints: list[np.ndarray],
    cameras_xy: np.ndarray,
    tries: int = 200,
) -> list[Part] | None:
    """Rotate by a random quarter turn and place without overlap, away from cameras.

    Two thirds of the objects go with their back against a wall, like real rooms."""
    for _ in range(tries):
        turns = int(rng.integers(4))
        rotated = [rotate_part(p, turns, np.zeros(3)) for p in local]
        lo, hi = _bounds(rotated)
        extent = hi - lo
        if np.any(extent[:2] > size[:2] - 0.1):
            continue
        xy = rng.uniform(0.02, size[:2] - extent[:2] - 0.02) - lo[:2]
        if rng.uniform() < 0.67:  # back (local +y) against the wall it faces
            back = np.array([[0, 1], [-1, 0], [0, -1], [1, 0]][turns])
            axis = int(np.argmax(np.abs(back)))
            xy[axis] = (size[axis] - hi[axis]) if back[axis] > 0 else -lo[axis]
        offset = np.array([xy[0], xy[1], 0.0])
        box = np.array([lo[:2] + xy, hi[:2] + xy])
        if any(np.all(box[0] < f[1] + 0.1) and np.all(f[0] < box[1] + 0.1) for f in footprints):
            continue
        nearest = np.clip(cameras_xy, box[0], box[1])
        if np.min(np.linalg.norm(cameras_xy - nearest, axis=1)) < 0.4:
            continue
        footprints.append(box)
        return [rotate_part(p, turns, offset) for p in local]
    return None


def _place_on_wall(
    rng: np.random.Generator,
    local: list[Part],
    size: np.ndarray,
    placed: list[Part],
    wall_boxes: list[tuple[np.ndarray, np.ndarray]],
    tries: int = 100,
) -> list[Part] | None:
    """Hang a flat object on a random wall, clear of other objects."""
    for _ in range(tries):
        wall = int(rng.integers(4))  # the wall the local +y faces: +y, -x, -y, +x
        rotated = [rotate_part(p, wall, np.zeros(3)) for p in local]
        lo, hi = _bounds(rotated)
        along = 0 if wall in (0, 2) else 1
        across = 1 - along
        span = hi[along] - lo[along]
        if span > size[along] - 0.3:
            continue
        offset = np.zeros(3)
        offset[along] = rng.uniform(0.15, size[along] - span - 0.15) - lo[along]
        offset[across] = size[across] if wall in (0, 3) else 0.0
        moved = [rotate_part(p, wall, offset) for p in local]
        lo, hi = _bounds(moved)
        others = [_bounds([p]) for p in placed] + wall_boxes
        if any(np.all(lo < o_hi + 0.05) and np.all(o_lo < hi + 0.05) for o_lo, o_hi in others):
            continue
        wall_boxes.append((lo, hi))
        if lo[2] <= 0:  # standing on the floor (a door): its bottom is hidden too
            moved = [Part(p.lo, p.hi, p.hidden | {"-z"}, p.axis) if p.lo[2] <= 0 else p for p in moved]
        return moved
    return None


Surface = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Vertices (n, 3), triangles (m, 3) and the direction (3,) or (m, 3) each triangle faces."""


def _mesh(
    parts: list[tuple[Part, int]], solids: tuple[np.ndarray, ...], spacing: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The welded mesh of every surface that can be seen (the module docstring has the
    steps): points, normals, triangles, and the instance and part (-1: the room) of each
    point. ``solids``:
    ``part_min, part_max, part_axis, room_min, room_max`` as the scene keeps them."""
    part_min, part_max, part_axis = solids[:3]
    radius = cylinder_radius(*(torch.from_numpy(a) for a in (part_min, part_max, part_axis.clip(0)))).numpy()
    pieces = _surfaces(parts, solids, radius, spacing)
    sizes = np.array([len(surface[0]) for surface, _, _ in pieces])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    vertices = np.concatenate([surface[0] for surface, _, _ in pieces])
    vertex_tags = np.repeat([(instance, k) for _, instance, k in pieces], sizes, axis=0)  # instance, owner part
    triangles = np.concatenate([surface[1] + offset for (surface, _, _), offset in zip(pieces, offsets)])
    owner = np.concatenate([np.full(len(surface[1]), k) for surface, _, k in pieces])
    centres = (vertices[triangles[:, 0]] + vertices[triangles[:, 1]] + vertices[triangles[:, 2]]) / 3
    seen = ~_covered(centres, owner, solids, radius)
    points, faces, point_tags = _weld(vertices, triangles[seen], vertex_tags)
    return points, _vertex_normals(points, faces), faces, point_tags[:, 0], point_tags[:, 1]


def _surfaces(
    parts: list[tuple[Part, int]], solids: tuple[np.ndarray, ...], radius: np.ndarray, spacing: float
) -> list[tuple[Surface, int, int]]:
    """Every surface facing the room, with its instance and owner part (-1: the room): the
    room's faces (seen from inside), then each part's."""
    part_min, part_max, part_axis, room_min, room_max = solids
    boxes = part_axis == BOX

    def grid(lo: np.ndarray, hi: np.ndarray, touching: np.ndarray) -> list[np.ndarray]:
        knots = np.concatenate([part_min[touching & boxes], part_max[touching & boxes]])
        return [_samples(lo[a], hi[a], knots[:, a], spacing) for a in range(3)]

    on_wall = np.any(part_min <= room_min + WELD_M, axis=1) | np.any(part_max >= room_max - WELD_M, axis=1)
    room = _box_surfaces(room_min, room_max, frozenset(), grid(room_min, room_max, on_wall))
    pieces: list[tuple[Surface, int, int]] = []
    for face_index, (vertices, triangles, outward) in enumerate(room):
        pieces.append((_facing((vertices, triangles, -outward)), face_index, -1))  # seen from inside
    for k, (part, instance) in enumerate(parts):
        if part.axis is None:
            touching = np.all((part_min <= part_max[k] + WELD_M) & (part_max >= part_min[k] - WELD_M), axis=1)
            touching[k] = False
            surfaces = _box_surfaces(part_min[k], part_max[k], part.hidden, grid(part_min[k], part_max[k], touching))
        else:
            surfaces = _cylinder_surfaces(part, radius[k], spacing)
        pieces += [(_facing(surface), instance, k) for surface in surfaces]
    return pieces


def _weld(
    vertices: np.ndarray, triangles: np.ndarray, vertex_tags: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points, triangles and point tags (instance and part) after welding: vertices at the
    same rounded position become one, degenerate triangles go, and unused vertices are dropped.

    The rounded positions are sorted stably, so that among equal ones the earliest
    solid's vertex (the room's first) leads; each run of equal positions is one vertex."""
    keys = np.round(vertices / WELD_M).astype(np.int64)
    order = np.lexsort(keys.T[::-1])
    starts = np.concatenate([[True], np.any(keys[order[1:]] != keys[order[:-1]], axis=1)])
    welded = np.empty(len(keys), dtype=np.int64)
    welded[order] = np.cumsum(starts) - 1
    first = order[starts]  # the vertex each welded one takes its position and tags from
    triangles = welded[triangles]
    distinct = (triangles[:, [0, 1, 2]] != triangles[:, [1, 2, 0]]).all(axis=1)
    triangles = triangles[distinct]  # welding collapsed the others
    used = np.flatnonzero(np.bincount(triangles.ravel(), minlength=len(first)))
    used = used[np.argsort(first[used])]  # points in the order they were made
    renumber = np.empty(len(first), dtype=np.int64)
    renumber[used] = np.arange(len(used))
    return vertices[first[used]], renumber[triangles], vertex_tags[first[used]]


def _facing(surface: Surface) -> Surface:
    """The surface with its triangles wound so that their normals face the way it gives
    (the triangles of a grid or of rings all wind alike: the first one decides)."""
    vertices, triangles, outward = surface
    a, b, c = vertices[triangles[0]]
    if np.dot(np.cross(b - a, c - a), np.broadcast_to(outward, triangles.shape)[0]) < 0:
        triangles = triangles[:, ::-1]
    return vertices, triangles, outward


def _samples(lo: float, hi: float, knots: np.ndarray, spacing: float) -> np.ndarray:
    """Grid coordinates along one axis of a solid, at most ``spacing`` apart, through
        every knot between ``lo`` and ``hi``.

        Every face of the solid uses these, so its faces meet at the same vertices. A
        box's knots are the bounds of the boxes it touches: where a leg meets a table
        top, or a cabinet the floor, a grid line runs along the contact, so each
        triangle is wholly seen or wholly covered, and both grids have the same samples
        along the contact (the same ``linspace`` between the same knots) and weld. Knots
    closer than ``KNOT_GAP_M`` (two objects' edges aligned by chance) are one, so that
    no sliver triangles arise."""
    inner = np.unique(knots[(knots > lo + KNOT_GAP_M) & (knots < hi - KNOT_GAP_M)])
    inner = inner[np.concatenate([[True], np.diff(inner) > KNOT_GAP_M])] if len(inner) else inner
    ends = np.concatenate([[lo], inner, [hi]])
    pieces = [np.linspace(a, b, max(1, math.ceil((b - a) / spacing - 1e-9)) + 1)[:-1] for a, b in zip(ends, ends[1:])]
    return np.concatenate([*pieces, [hi]])


def _box_surfaces(lo: np.ndarray, hi: np.ndarray, hidden: frozenset[str], samples: list[np.ndarray]) -> list[Surface]:
    """A grid through ``samples`` (per axis) on each face of the box that is not hidden,
    facing out of the box."""
    surfaces = []
    for face in FACES:
        if face in hidden:
            continue
        axis = "xyz".index(face[1])
        u, v = [a for a in range(3) if a != axis]
        gu, gv = np.meshgrid(samples[u], samples[v], indexing="ij")
        vertices = np.empty((gu.size, 3))
        vertices[:, u], vertices[:, v] = gu.ravel(), gv.ravel()
        vertices[:, axis] = hi[axis] if face[0] == "+" else lo[axis]
        outward = np.zeros(3)
        outward[axis] = 1.0 if face[0] == "+" else -1.0
        nu, nv = len(samples[u]) - 1, len(samples[v]) - 1
        ii, jj = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
        a = (ii * (nv + 1) + jj).ravel()
        b, c, d = a + (nv + 1), a + (nv + 1) + 1, a + 1
        surfaces.append((vertices, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]), outward))
    return surfaces


def _cylinder_surfaces(part: Part, radius: float, spacing: float) -> list[Surface]:
    """A grid on the round side (rings along the axis at most ``spacing`` apart, at
    least ``MIN_SEGMENTS`` segments around) and, on each cap not hidden, concentric
    rings joined by triangles; the side's end rings are the caps' rims.

    The number of segments is a multiple of 4 and the rings start half a segment
    round: no vertex lies where a plane along the axis touches the side (a cushion
    on a seat), so a cylinder never welds to a plane along a line."""
    axis = part.axis
    assert axis is not None
    u, v = (axis + 1) % 3, (axis + 2) % 3  # as cast_rays takes the cross-section
    lo, hi = np.array(part.lo), np.array(part.hi)
    centre = (lo + hi) / 2
    segments = 4 * math.ceil(max(MIN_SEGMENTS, 2 * math.pi * radius / spacing - 1e-9) / 4)
    start = math.pi / segments

    def ring(r: float, count: int) -> np.ndarray:
        angle = start + 2 * math.pi * np.arange(count) / count
        points = np.zeros((count, 3))
        points[:, u], points[:, v] = centre[u] + r * np.cos(angle), centre[v] + r * np.sin(angle)
        return points

    rim = ring(radius, segments)
    along = _samples(lo[axis], hi[axis], np.empty(0), spacing)
    side = np.tile(rim, (len(along), 1))
    side[:, axis] = np.repeat(along, segments)
    ii, jj = np.meshgrid(np.arange(len(along) - 1), np.arange(segments), indexing="ij")
    a = (ii * segments + jj).ravel()
    b = (ii * segments + (jj + 1) % segments).ravel()
    c, d = b + segments, a + segments
    middle = start + 2 * math.pi * (jj.ravel() + 0.5) / segments
    radial = np.zeros((len(a), 3))
    radial[:, u], radial[:, v] = np.cos(middle), np.sin(middle)
    surfaces = [(side, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]), np.tile(radial, (2, 1)))]

    num_rings = max(1, math.ceil(radius / spacing - 1e-9))
    counts = [1] + [max(6, math.ceil(segments * k / num_rings)) for k in range(1, num_rings)] + [segments]
    disc = np.concatenate([ring(radius * k / num_rings, n) for k, n in enumerate(counts[:-1])] + [rim])
    starts = np.concatenate([[0], np.cumsum(counts)])
    rings = [np.arange(starts[k], starts[k + 1]) for k in range(len(counts))]
    disc_triangles = np.concatenate([_zip_rings(inner, outer) for inner, outer in zip(rings[:-1], rings[1:])])
    for sign, height in (("-", lo[axis]), ("+", hi[axis])):
        if sign + "xyz"[axis] in part.hidden:
            continue
        cap = disc.copy()
        cap[:, axis] = height
        outward = np.zeros(3)
        outward[axis] = 1.0 if sign == "+" else -1.0
        surfaces.append((cap, disc_triangles, outward))
    return surfaces


def _zip_rings(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Triangles between two concentric rings of vertex indices that both start at angle
    0 and go round the same way: walking round, each step advances along the ring whose
    next vertex comes first. A one-vertex inner ring (the centre) makes a fan, plus
    one degenerate triangle that welding's clean-up removes."""
    steps = np.concatenate([np.arange(1, len(inner) + 1) / len(inner), np.arange(1, len(outer) + 1) / len(outer)])
    on_inner = np.concatenate([np.ones(len(inner), bool), np.zeros(len(outer), bool)])
    on_inner = on_inner[np.argsort(steps, kind="stable")]
    i = np.cumsum(on_inner) - on_inner  # inner-ring steps taken before this one
    j = np.cumsum(~on_inner) - ~on_inner
    ahead = np.where(on_inner, inner[(i + 1) % len(inner)], outer[(j + 1) % len(outer)])
    return np.stack([inner[i % len(inner)], outer[j % len(outer)], ahead], axis=1)


def _covered(centres: np.ndarray, owner: np.ndarray, solids: tuple[np.ndarray, ...], radius: np.ndarray) -> np.ndarray:
    """Whether each triangle (by its centre) lies inside or on a solid other than the part
    it belongs to (``owner``; -1: the room), or, for a part's triangle, on or beyond the
    room's boundary: surfaces where solids touch are never seen."""
    part_min, part_max, part_axis, room_min, room_max = solids
    covered = (owner >= 0) & np.any((centres <= room_min + WELD_M) | (centres >= room_max - WELD_M), axis=1)
    by_x = np.argsort(centres[:, 0], kind="stable")
    sorted_x = centres[by_x, 0]
    for k in range(len(part_min)):
        lo, hi = part_min[k] - WELD_M, part_max[k] + WELD_M
        near = by_x[np.searchsorted(sorted_x, lo[0]) : np.searchsorted(sorted_x, hi[0], side="right")]
        near = near[np.all((centres[near, 1:] >= lo[1:]) & (centres[near, 1:] <= hi[1:]), axis=1) & (owner[near] != k)]
        if part_axis[k] != BOX:
            u, v = (part_axis[k] + 1) % 3, (part_axis[k] + 2) % 3
            centre = (part_min[k] + part_max[k]) / 2
            offset_u, offset_v = centres[near, u] - centre[u], centres[near, v] - centre[v]
            near = near[offset_u**2 + offset_v**2 <= (radius[k] + WELD_M) ** 2]
        covered[near] = True
    return covered


def _vertex_normals(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """ScanNet's vertex normals: per vertex, the sum of the normals of its triangles
    weighted by their areas (the cross product of two edges is both), normalised."""
    a, b, c = points[faces[:, 0]], points[faces[:, 1]], points[faces[:, 2]]
    weighted = np.repeat(np.cross(b - a, c - a), 3, axis=0)  # once per corner, as in faces.ravel()
    normals = np.stack([np.bincount(faces.ravel(), weighted[:, k], len(points)) for k in range(3)], axis=1)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _shade(normals: np.ndarray) -> np.ndarray:
    """View-independent Lambert shading, shared by rendered pixels and point colours."""
    return 0.6 + 0.4 * np.abs(normals @ LIGHT)


def _point_colors(scene: ToyScene) -> np.ndarray:
    """Point colours: material (v2: instance) colour times shading, no camera effects."""
    shade = _shade(scene.normals.astype(np.float64))
    albedo = scene.instance_color[scene.point_instance] if scene.point_albedo is None else scene.point_albedo
    return np.clip(albedo * shade[:, None], 0, 255).round().astype(np.uint8)


def object_view(
    class_name: str,
    seed: tuple[int, ...],
    height: int,
    width: int,
    fov_deg: float = 70.0,
    appearance: Appearance = "materials",
) -> ToyScene:
    """A toy room holding one object of ``class_name`` and one camera looking at it:
    SAS's "a photo of a {class} in a room", rendered with exact masks (the capability
    stage's ``render`` generator), in the rooms' ``appearance``. ``wall`` and ``floor``
    are views of an empty room; a class without a template raises KeyError.
    Deterministic from ``seed``."""
    rng = np.random.default_rng(list(seed))
    size = np.array([rng.uniform(4.0, 6.0), rng.uniform(3.5, 5.5), rng.uniform(2.6, 3.0)])
    placed = _place_alone(rng, class_name, size, seed)
    classes = list(ROOM_FACE_CLASSES) + ([class_name] if placed else [])
    parts = [(p, len(classes) - 1) for p in placed]
    target = _view_target(rng, class_name, placed, size)
    eye = _view_eye(rng, class_name, placed, size, target)
    part_min, part_max, part_axis, part_instance = _part_arrays(parts)
    colors, looks = _appearance(appearance, rng, classes, parts, seed)
    return ToyScene(
        room_min=np.zeros(3),
        room_max=size,
        part_min=part_min,
        part_max=part_max,
        part_axis=part_axis,
        part_instance=part_instance,
        instance_class=classes,
        instance_color=colors,
        points=np.empty((0, 3), np.float32),
        normals=np.empty((0, 3), np.float32),
        faces=np.empty((0, 3), np.int32),
        point_instance=np.empty(0, np.int64),
        intrinsics=_intrinsics(height, width, fov_deg),
        cam_to_world=_look_at(eye, target)[None],
        height=height,
        width=width,
        looks=looks,
    )


def _place_alone(rng: np.random.Generator, class_name: str, size: np.ndarray, seed: tuple[int, ...]) -> list[Part]:
    """The parts of one ``class_name`` object placed in an empty room of ``size`` (none
    for ``wall`` and ``floor``)."""
    placed: list[Part] | None = None
    if class_name in FLOOR_TEMPLATES:
        for _ in range(20):  # a template too large for the room drawn: draw the template again
            placed = placed or _place_on_floor(rng, FLOOR_TEMPLATES[class_name](rng), size, [], np.full((1, 2), -1e3))
    elif class_name in WALL_TEMPLATES:
        for _ in range(20):
            placed = placed or _place_on_wall(rng, WALL_TEMPLATES[class_name](rng), size, [], [])
    elif class_name in ("wall", "floor"):
        placed = []
    else:
        raise KeyError(f"toy scenes have no '{class_name}' (templates: {[*FLOOR_TEMPLATES, *WALL_TEMPLATES]})")
    if placed is None:
        raise ValueError(f"object_view: no '{class_name}' fits a {size.round(2).tolist()} m room (seed {seed})")
    return placed


def _view_target(rng: np.random.Generator, class_name: str, placed: list[Part], size: np.ndarray) -> np.ndarray:
    """The point the camera looks at: near the object's centre, on the floor, or on a wall."""
    if placed:
        lo, hi = _bounds(placed)
        return (lo + hi) / 2 + rng.uniform(-0.15, 0.15, 3) * (hi - lo)
    if class_name == "floor":
        return np.array([*rng.uniform(0.25, 0.75, 2) * size[:2], 0.0])
    target = np.array([*rng.uniform(0.2, 0.8, 2) * size[:2], rng.uniform(0.8, 1.8)])
    axis = int(rng.integers(2))  # onto a wall facing the x or the y axis
    target[axis] = size[axis] if rng.uniform() < 0.5 else 0.0
    return target


def _view_eye(
    rng: np.random.Generator, class_name: str, placed: list[Part], size: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """An eye inside the room, outside the object, at a distance that fits it."""
    lo, hi = _bounds(placed) if placed else (np.zeros(3), np.zeros(3))
    extent = float(np.max(hi - lo)) if placed else 2.0
    near, far = max(0.9, 1.2 * extent), max(1.8, 2.4 * extent)
    for _ in range(1000):
        eye = np.array([*rng.uniform(0.3, size[:2] - 0.3), rng.uniform(1.1, 1.8)])
        inside = placed and np.all((eye >= lo - 0.2) & (eye <= hi + 0.2))
        if not inside and near <= np.linalg.norm(eye - target) <= far:
            return eye
    raise ValueError(f"object_view: no camera position sees the '{class_name}' from {near:.1f}-{far:.1f} m")
