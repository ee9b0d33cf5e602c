"""Deterministic synthetic indoor scenes from a seed (dataset ``toy``).

A room (floor, four walls, ceiling) holds furniture of ScanNet-20 classes made of
axis-aligned boxes (see ``furniture.py``). Every visible box face is a subdivided
triangle mesh; the scene's points are the mesh vertices, with class labels and
instance ids. A camera loop inside the room looks across it; colour, metric
depth and per-pixel label/instance images are rendered by exact ray casting
against the boxes, so visibility and occlusion are ground truth.
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
from ovlift.datasets.furniture import CLASS_COLORS, FACES, FLOOR_TEMPLATES, WALL_TEMPLATES, Part
from ovlift.kernels.raycast import ROOM_FACES, cast_rays, pixel_rays
from ovlift.vocabularies import SCANNET20

GENERATOR_VERSION = "1"
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
    box_min: np.ndarray
    """(B, 3) furniture part boxes."""
    box_max: np.ndarray
    box_instance: np.ndarray
    """(B,) instance id of each box."""
    instance_class: list[str]
    """Class name per instance; instances 0-5 are the room faces."""
    instance_color: np.ndarray
    """(I, 3) base colour per instance."""
    points: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    point_instance: np.ndarray
    intrinsics: np.ndarray
    cam_to_world: np.ndarray
    """(T, 4, 4) poses."""
    height: int
    width: int

    @property
    def instance_label(self) -> np.ndarray:
        return np.array(
            [SCANNET20.index(c) if c in SCANNET20.classes else IGNORE_LABEL for c in self.instance_class],
            dtype=np.int16,
        )

    def hit_instance(self) -> np.ndarray:
        """Instance of each ray-cast hit index (boxes, then the six room faces)."""
        return np.concatenate([self.box_instance, np.arange(ROOM_FACES)])

    def render(self, index: int) -> Frame:
        pose = torch.from_numpy(self.cam_to_world[index]).float()
        intrinsics = torch.from_numpy(self.intrinsics).float()
        origins, directions = pixel_rays(intrinsics, pose, self.height, self.width)
        t, hit, normal = cast_rays(origins, directions, *self._boxes(torch.float32))
        instance = self.hit_instance()[hit.numpy()]
        shade = _shade(normal.numpy())
        color = np.clip(self.instance_color[instance] * shade[:, None], 0, 255).round().astype(np.uint8)
        shape = (self.height, self.width)
        return Frame(
            name=f"frame-{index:06d}",
            color=color.reshape(*shape, 3),
            depth=t.numpy().astype(np.float32).reshape(shape),
            intrinsics=self.intrinsics.copy(),
            cam_to_world=self.cam_to_world[index].copy(),
            labels=self.instance_label[instance].reshape(shape),
            instances=instance.astype(np.int32).reshape(shape),
        )

    def first_hit_distance(self, origin: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """For rays from ``origin`` to each target, the ray parameter of the first hit
        (1.0 means the target itself is the first surface reached)."""
        o = torch.from_numpy(np.broadcast_to(origin, targets.shape).astype(np.float64))
        d = torch.from_numpy(targets.astype(np.float64)) - o
        t, _, _ = cast_rays(o, d, *self._boxes(torch.float64))
        return t.numpy()

    def _boxes(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        arrays = (self.box_min, self.box_max, self.room_min, self.room_max)
        return tuple(torch.from_numpy(a).to(dtype) for a in arrays)


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
    rng = np.random.default_rng([config.seed, index])
    size = np.array(
        [rng.uniform(*config.room_width_m), rng.uniform(*config.room_depth_m), rng.uniform(*config.room_height_m)]
    )
    room_min, room_max = np.zeros(3), size
    cam_to_world = _camera_loop(rng, size, config.num_frames)
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

    room_parts = [Part(tuple(room_min), tuple(room_max))]
    points, normals, faces, point_instance = _mesh(parts, room_parts, config.vertex_spacing_m)
    colors = np.array([CLASS_COLORS[c] for c in classes], dtype=np.float64)
    colors = np.clip(colors + rng.uniform(-18, 18, size=colors.shape), 0, 255)
    focal = config.image_width / 2 / math.tan(math.radians(config.fov_deg) / 2)
    intrinsics = np.array(
        [[focal, 0, (config.image_width - 1) / 2], [0, focal, (config.image_height - 1) / 2], [0, 0, 1]]
    )
    return ToyScene(
        room_min=room_min,
        room_max=room_max,
        box_min=np.array([p.lo for p, _ in parts]).reshape(-1, 3),
        box_max=np.array([p.hi for p, _ in parts]).reshape(-1, 3),
        box_instance=np.array([i for _, i in parts], dtype=np.int64),
        instance_class=classes,
        instance_color=colors,
        points=points,
        normals=normals,
        faces=faces,
        point_instance=point_instance,
        intrinsics=intrinsics,
        cam_to_world=cam_to_world,
        height=config.image_height,
        width=config.image_width,
    )


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


def _rotate(part: Part, quarter_turns: int, offset: np.ndarray) -> Part:
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
    return Part(tuple(lo), tuple(hi), frozenset(hidden))


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
        rotated = [_rotate(p, turns, np.zeros(3)) for p in local]
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
        return [_rotate(p, turns, offset) for p in local]
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
        rotated = [_rotate(p, wall, np.zeros(3)) for p in local]
        lo, hi = _bounds(rotated)
        along = 0 if wall in (0, 2) else 1
        across = 1 - along
        span = hi[along] - lo[along]
        if span > size[along] - 0.3:
            continue
        offset = np.zeros(3)
        offset[along] = rng.uniform(0.15, size[along] - span - 0.15) - lo[along]
        offset[across] = size[across] if wall in (0, 3) else 0.0
        moved = [_rotate(p, wall, offset) for p in local]
        lo, hi = _bounds(moved)
        others = [_bounds([p]) for p in placed] + wall_boxes
        if any(np.all(lo < o_hi + 0.05) and np.all(o_lo < hi + 0.05) for o_lo, o_hi in others):
            continue
        wall_boxes.append((lo, hi))
        if lo[2] <= 0:  # standing on the floor (a door): its bottom is hidden too
            moved = [Part(p.lo, p.hi, p.hidden | {"-z"}) if p.lo[2] <= 0 else p for p in moved]
        return moved
    return None


def _mesh(
    parts: list[tuple[Part, int]], room: list[Part], spacing: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Subdivided triangle meshes of every visible face; room faces are seen from inside."""
    points, normals, faces, instance = [], [], [], []
    count = 0

    def add(lo: np.ndarray, hi: np.ndarray, face: str, inst: int, inward: bool) -> None:
        nonlocal count
        axis = "xyz".index(face[1])
        u, v = [a for a in range(3) if a != axis]
        nu = max(1, math.ceil((hi[u] - lo[u]) / spacing - 1e-9))
        nv = max(1, math.ceil((hi[v] - lo[v]) / spacing - 1e-9))
        gu, gv = np.meshgrid(np.linspace(lo[u], hi[u], nu + 1), np.linspace(lo[v], hi[v], nv + 1), indexing="ij")
        verts = np.empty((gu.size, 3))
        verts[:, u], verts[:, v] = gu.ravel(), gv.ravel()
        verts[:, axis] = hi[axis] if face[0] == "+" else lo[axis]
        normal = np.zeros(3)
        normal[axis] = (1.0 if face[0] == "+" else -1.0) * (-1.0 if inward else 1.0)
        ii, jj = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
        a = (ii * (nv + 1) + jj).ravel()
        b, c, d = a + (nv + 1), a + (nv + 1) + 1, a + 1
        tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
        e1, e2 = verts[tris[0, 1]] - verts[tris[0, 0]], verts[tris[0, 2]] - verts[tris[0, 0]]
        if np.dot(np.cross(e1, e2), normal) < 0:
            tris = tris[:, ::-1]
        points.append(verts)
        normals.append(np.broadcast_to(normal, verts.shape))
        faces.append(tris + count)
        instance.append(np.full(len(verts), inst))
        count += len(verts)

    for face_index, face in enumerate(FACES):
        add(np.array(room[0].lo), np.array(room[0].hi), face, face_index, inward=True)
    for part, inst in parts:
        for face in FACES:
            if face not in part.hidden:
                add(np.array(part.lo), np.array(part.hi), face, inst, inward=False)
    return (
        np.concatenate(points).astype(np.float32),
        np.concatenate(normals).astype(np.float32),
        np.concatenate(faces).astype(np.int32),
        np.concatenate(instance).astype(np.int64),
    )


def _shade(normals: np.ndarray) -> np.ndarray:
    """View-independent Lambert shading, shared by rendered pixels and point colours."""
    return 0.6 + 0.4 * np.abs(normals @ LIGHT)


def _point_colors(scene: ToyScene) -> np.ndarray:
    shade = _shade(scene.normals.astype(np.float64))
    return np.clip(scene.instance_color[scene.point_instance] * shade[:, None], 0, 255).round().astype(np.uint8)
