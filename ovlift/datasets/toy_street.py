"""Deterministic synthetic street scenes seen by a LiDAR and six cameras (dataset ``toy-street``).

A procedural stand-in for nuScenes, small enough for CLIP2Scene to be trained and
measured on a laptop: one scene is one key frame, with its LiDAR sweeps and six
surround camera images, labelled with the 16 nuScenes-lidarseg classes
(``NUSCENES16``). Everything is drawn from (seed, scene index); the layout is in
``toy_street_layout.py``, the objects in ``toy_street_objects.py``.

The world (metres, seconds):

- a street in its map frame: x along the road, y to the left, z up, ground at
  z = 0. Every solid is an axis-aligned box or a cylinder along a coordinate axis
  (``kernels.raycast``), so streets run straight along x (no curves, slopes or
  rotated objects); variety is in widths, lanes, set-backs and what stands where;
- the enclosing box x in [-85, 85], y beyond the building rows, z in [0, 60] is
  cast as the "room" seen from inside: its floor is the ground, its walls and
  ceiling are sky. The ground is labelled by region: the road (and a cross street,
  half the scenes) is "drivable surface", everything else "terrain" (grass strips,
  building gaps, behind the buildings);
- raised solids on it: sidewalks (boxes 0.12-0.18 m high, "sidewalk"), in 60 % of
  scenes a traffic island between the two directions ("other flat", the only
  other-flat here);
- buildings ("manmade", one to three boxes: a block, a set-back storey or an
  annex, an awning) in rows with gaps, fences, street lights and traffic signs
  (cylinder poles with box arms, lamps and signs, "manmade"), trees (trunk
  cylinder + cylindrical or box crown) and bushes ("vegetation");
- vehicles of a few boxes on cylinder wheels: cars and vans, box trucks, buses,
  semi-trailer trucks (a "truck" tractor pulling a "trailer"), parked trailers,
  excavators ("construction vehicle", also in a construction zone fenced by
  "barrier"s and "traffic cone"s), motorcycles; people (a body and a head
  cylinder, "person"), cyclists (a "bicycle" with a "person" riding it: nuScenes
  boxes include the rider in the bicycle/motorcycle, here the rider is a person,
  as for moving motorcycles);
- the ego vehicle drives +x in a lane of the right-hand side at 5-10 m/s with a
  small heading (within +-3 degrees) and yaw rate (+-0.04 rad/s), an exact arc
  of a circle; it is at x = 0 at the key frame (time 0). Its body is not modelled
  (nuScenes removes ego points too). Other vehicles, cyclists and some pedestrians
  move at constant velocity along their lane or sidewalk (cross traffic and
  crossing pedestrians along y); the rest are static. Movers are placed so that
  nothing collides and nothing enters the ego's corridor during the 0.5 s the
  sweeps cover.

Sensors (the ego frame: origin on the ground under the rear axle, x forward,
y left, z up):

- a spinning 32-beam LiDAR like nuScenes' Velodyne HDL-32E: elevations evenly
  from -30.67 to +10.67 degrees, ``azimuth_steps`` firings per revolution,
  mounted at (0.94, 0, 1.84) with its axes along the ego's; 20 Hz sweeps, key
  frames at 2 Hz, so a key frame has up to 10 earlier sweeps (``num_sweeps``).
  Each sweep is cast at one instant, its own time -k / 20 s (objects and ego
  where they are then; a real sweep spins for those 50 ms), from its own pose,
  with an azimuth phase drawn per sweep. A ray gives a point at its exact first
  hit if that is a solid or the ground within ``lidar_range_m``; sky, or anything
  further, gives none. One return per ray, no intensity, no dropouts; optional
  range noise N(0, ``range_noise_m``) along the ray (seeded per sweep);
- the scene's world frame is the key frame's LiDAR frame (x forward, y left,
  z up, origin at the sensor): every sweep's points, measured in their own
  sensor frame, are registered into it through the exact ego poses, so static
  surfaces coincide across sweeps and moving objects smear, as in nuScenes.
  Points carry the class and instance of the solid (or ground region) hit, their
  sweep index and sweep time; no colours, no normals;
- six cameras with nuScenes' layout (``CAMERAS``): FRONT, FRONT_RIGHT,
  BACK_RIGHT, BACK, BACK_LEFT, FRONT_LEFT at yaw 0, -55, -110, 180, 110, 55
  degrees, level, about 1.5 m high, focal lengths as nuScenes' at 1600 px
  (1266 px, 809 for the wide back camera: 64 and 89 degrees horizontally) scaled
  to ``image_width``, principal point at the image centre, no distortion. All
  six capture at the key-frame time (nuScenes' fire as the LiDAR passes them,
  within tens of milliseconds). ``cam_to_world`` takes OpenCV camera axes
  (x right, y down, z forward) to the key-frame LiDAR frame. Images are rendered
  by exact ray casting: per-pixel class (-1 for sky, the ignore label) and
  instance (0 for sky), and colour = the material colour of the point hit
  (``materials.py``: materials shared across classes, a texture per instance,
  ``STREET_MATERIALS``; with ``appearance: class-colour``, v1's class colour with
  a small per-instance tint), times Lambert shading under a fixed sun; sky is a
  gradient; the whole image times the camera's exposure and white balance (drawn
  per camera). No depth is given (LiDAR-camera data); ``render_camera`` keeps it
  for tests.

Speed: each ray group (an azimuth sector x elevation band of a sweep, a 48 px tile
of an image) is cast only against the parts whose bounding sphere meets the
group's cone of rays and lies before every ray of the group has left the
enclosing box (and, for the LiDAR, within range). That is exact - a culled part cannot be hit first - and
keeps each group to a few dozen parts. The groups are small, so they are cast on
one torch thread (five times faster than two, measured). LiDAR rays are cast in
float64 (float32 puts points millimetres off a thin pole 50 m away), pixels in
float32. A key frame with 10 sweeps and six 225x400 images takes about 1.5 s on
two CPU cores (``benchmarks/toy_street.py``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field

from ovlift.cache_schema import IGNORE_LABEL, canonical_json
from ovlift.config import FrozenConfig
from ovlift.datasets.base import Dataset, Frame, SceneSource
from ovlift.datasets.materials import STREET_MATERIALS, Appearance, SceneLooks, draw_scene_looks
from ovlift.datasets.toy_street_layout import StreetLayout, make_street
from ovlift.datasets.toy_street_objects import SKY_COLORS, STREET_COLORS
from ovlift.kernels.raycast import cast_rays, pixel_rays
from ovlift.vocabularies import NUSCENES16

GENERATOR_VERSION = "2"
"""Changes whenever the same config generates a different scene (it is part of the fingerprint).
2: appearance v3 (``materials.py``)."""
SWEEP_PERIOD_S = 0.05
"""LiDAR sweeps at 20 Hz."""
MAX_SWEEPS = 10
"""Key frames at 2 Hz: ten earlier sweeps before the next key frame's."""
BEAM_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)
"""The HDL-32E's 32 beams."""
LIDAR_IN_EGO = np.array([0.94, 0.0, 1.84])
"""LiDAR position in the ego frame (nuScenes' calibration, rounded)."""
FLOOR_FACE = 4
"""The enclosing box's face index of its floor (the ground) in ``cast_rays``' order."""
CAMERAS: tuple[tuple[str, tuple[float, float, float], float, float], ...] = (
    ("CAM_FRONT", (1.70, 0.00, 1.51), 0.0, 1266.4 / 1600),
    ("CAM_FRONT_RIGHT", (1.55, -0.49, 1.50), -55.0, 1260.5 / 1600),
    ("CAM_BACK_RIGHT", (1.05, -0.48, 1.56), -110.0, 1259.5 / 1600),
    ("CAM_BACK", (0.03, 0.00, 1.58), 180.0, 809.2 / 1600),
    ("CAM_BACK_LEFT", (1.04, 0.48, 1.56), 110.0, 1256.7 / 1600),
    ("CAM_FRONT_LEFT", (1.52, 0.49, 1.51), 55.0, 1272.6 / 1600),
)
"""Name, position in the ego frame, yaw (degrees, left of forward) and focal length per
image width (nuScenes' intrinsics at 1600 px)."""
SUN = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])
RANGE_NOISE_STREAM, AZIMUTH_STREAM, COLOR_STREAM, APPEARANCE_STREAM, EXPOSURE_STREAM = 1, 2, 3, 4, 5
"""Draws from their own generators, seeded (seed, scene index, stream[, sweep, instance or
camera]), so that noise and colours never change the layout drawn from (seed, scene index)."""
SECTORS, BANDS = 16, 4
"""A sweep is cast in ray groups: this many azimuth sectors times elevation bands."""
TILE_PX = 48
"""An image is cast in tiles of this many pixels square (ray groups)."""


class ToyStreetConfig(FrozenConfig):
    num_scenes: int = Field(4, ge=1)
    """Number of key frames, each its own street, named ``toy_street_0000``, ..."""
    seed: int = 0
    """Base seed; scene i is generated from (seed, i)."""
    num_sweeps: int = Field(MAX_SWEEPS, ge=0, le=MAX_SWEEPS)
    """Earlier LiDAR sweeps registered into each key frame (20 Hz sweeps, 2 Hz key frames)."""
    azimuth_steps: int = Field(1024, ge=8)
    """LiDAR firings per revolution (per beam)."""
    lidar_range_m: float = Field(70.0, gt=0, le=80)
    """Farthest LiDAR return."""
    range_noise_m: float = Field(0.02, ge=0)
    """Standard deviation of the LiDAR range noise (the HDL-32E's accuracy is about 2 cm)."""
    image_height: int = Field(225, ge=8)
    """Rendered image height in pixels (nuScenes' 900 / 4)."""
    image_width: int = Field(400, ge=8)
    """Rendered image width in pixels (nuScenes' 1600 / 4)."""
    moving_vehicles: int = Field(8, ge=0)
    """Vehicles driving in the lanes (fewer if the street runs out of space)."""
    pedestrians: int = Field(12, ge=0)
    """People on the sidewalks (some standing); a few more cross at a cross street."""
    cyclists: int = Field(2, ge=0)
    """Cyclists riding along the road edge."""
    appearance: Appearance = "materials"
    """``materials``: appearance v3 (``materials.py``); ``class-colour``: v1, each class
    its colour with a small per-instance tint (colour alone gives the class away)."""


def lidar_to_ego() -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = LIDAR_IN_EGO
    return pose


def camera_to_ego(position: tuple[float, float, float], yaw_deg: float) -> np.ndarray:
    """A level camera looking ``yaw_deg`` left of forward; OpenCV axes (x right, y down, z forward)."""
    yaw = math.radians(yaw_deg)
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, [0.0, 0.0, -1.0], forward, position
    return pose


@dataclass
class LidarPoints:
    """Points of one or more sweeps, in the key-frame LiDAR frame."""

    points: np.ndarray
    """(N, 3) float32 metres."""
    instances: np.ndarray
    """(N,) int32 instance hit."""
    labels: np.ndarray
    """(N,) int16 class of the instance."""
    sweep: np.ndarray
    """(N,) int16 sweep index."""
    timestamp: np.ndarray
    """(N,) float32 sweep time, seconds (<= 0)."""


@dataclass
class ToyStreetScene:
    """The street and the sensors of one key frame (everything needed to render it)."""

    layout: StreetLayout
    config: ToyStreetConfig
    noise_seed: tuple[int, ...]
    instance_color: np.ndarray
    """(I, 3) base colour per instance (with ``looks``: its body look's first colour)."""
    looks: SceneLooks | None = None
    """Appearance v3 (None: v1, ``instance_color`` flat)."""

    @property
    def instance_label(self) -> np.ndarray:
        """(I,) NUSCENES16 class per instance, ``IGNORE_LABEL`` for the sky."""
        names = self.layout.instance_class
        return np.array([IGNORE_LABEL if c is None else NUSCENES16.index(c) for c in names], dtype=np.int16)

    def solids(self, time: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Part boxes (min, max) and axes at ``time`` seconds from the key frame."""
        shift = self.layout.instance_velocity[self.layout.part_instance] * time
        return self.layout.part_min + shift, self.layout.part_max + shift, self.layout.part_axis

    def hit_instance(self, hit: np.ndarray, where: np.ndarray) -> np.ndarray:
        """Instance of each ``cast_rays`` hit; ``where``: (R, 2) x, y of the hits (the
        ground is labelled by region)."""
        layout = self.layout
        num_parts = len(layout.part_min)
        out = np.zeros(len(hit), dtype=np.int64)  # sky
        solid = hit < num_parts
        out[solid] = layout.part_instance[hit[solid]]
        ground = np.flatnonzero(hit == num_parts + FLOOR_FACE)
        out[ground] = 1
        for (x0, y0, x1, y1), instance in zip(layout.floor_regions, layout.floor_instance):
            x, y = where[ground, 0], where[ground, 1]
            out[ground[(x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)]] = instance
        return out

    def lidar_pose(self, time: float) -> np.ndarray:
        """(4, 4) LiDAR-to-map at ``time``."""
        return self.layout.ego.pose(time) @ lidar_to_ego()

    @property
    def key_pose(self) -> np.ndarray:
        """(4, 4) key-frame LiDAR frame (the scene's world) to map."""
        return self.lidar_pose(0.0)

    def beam_directions(self, sweep: int) -> np.ndarray:
        """(azimuth_steps * 32, 3) unit ray directions in the sensor frame, azimuth-major."""
        phase = np.random.default_rng([*self.noise_seed, AZIMUTH_STREAM]).uniform(0, 2 * math.pi, MAX_SWEEPS + 1)
        steps = self.config.azimuth_steps
        azimuth = phase[sweep] + 2 * math.pi * np.arange(steps) / steps
        elevation = np.radians(BEAM_ELEVATIONS_DEG)
        az, el = np.meshgrid(azimuth, elevation, indexing="ij")
        return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)

    def sweep(self, sweep: int) -> LidarPoints:
        """The points of sweep ``sweep`` (0 = key frame), registered into the key frame."""
        time = -sweep * SWEEP_PERIOD_S
        pose = self.lidar_pose(time)
        local = self.beam_directions(sweep)
        directions = local @ pose[:3, :3].T
        steps, beams = self.config.azimuth_steps, len(BEAM_ELEVATIONS_DEG)
        index = np.arange(len(local)).reshape(steps, beams)
        per = max(1, steps // SECTORS)
        band = beams // BANDS
        groups = [index[a : a + per, e : e + band].ravel() for a in range(0, steps, per) for e in range(0, beams, band)]
        t, hit, _ = self._cast(pose[:3, 3], directions, groups, time, self.config.lidar_range_m, torch.float64)
        num_parts = len(self.layout.part_min)
        keep = ((hit < num_parts) | (hit == num_parts + FLOOR_FACE)) & (t <= self.config.lidar_range_m)
        t, hit, local, directions = t[keep], hit[keep], local[keep], directions[keep]
        instance = self.hit_instance(hit, pose[:2, 3] + t[:, None] * directions[:, :2])
        if self.config.range_noise_m > 0:
            noise = np.random.default_rng([*self.noise_seed, RANGE_NOISE_STREAM, sweep])
            t = t + noise.normal(0, self.config.range_noise_m, len(t))
        measured = t[:, None] * local  # in the sweep's sensor frame
        to_key = np.linalg.inv(self.key_pose) @ pose
        points = measured @ to_key[:3, :3].T + to_key[:3, 3]
        return LidarPoints(
            points=points.astype(np.float32),
            instances=instance.astype(np.int32),
            labels=self.instance_label[instance],
            sweep=np.full(len(t), sweep, dtype=np.int16),
            timestamp=np.full(len(t), time, dtype=np.float32),
        )

    def lidar(self) -> LidarPoints:
        """The key frame's sweep and its ``num_sweeps`` earlier ones, in sweep order."""
        sweeps = [self.sweep(k) for k in range(self.config.num_sweeps + 1)]
        return LidarPoints(*(np.concatenate([getattr(s, f) for s in sweeps]) for f in LidarPoints.__dataclass_fields__))

    def intrinsics(self, index: int) -> np.ndarray:
        focal = CAMERAS[index][3] * self.config.image_width
        width, height = self.config.image_width, self.config.image_height
        return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]])

    def camera_pose(self, index: int) -> np.ndarray:
        """(4, 4) camera-to-world (the key-frame LiDAR frame) of camera ``index``."""
        _, position, yaw, _ = CAMERAS[index]
        return np.linalg.inv(lidar_to_ego()) @ camera_to_ego(position, yaw)

    def render_camera(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Colour (H, W, 3) uint8, labels (H, W) int16, instances (H, W) int32 and z-depth
        (H, W) float32 (0 for sky) of camera ``index`` at the key-frame time."""
        height, width = self.config.image_height, self.config.image_width
        pose = self.key_pose @ self.camera_pose(index)  # camera to map
        origins, directions = pixel_rays(
            torch.from_numpy(self.intrinsics(index)), torch.from_numpy(pose), height, width
        )
        directions = directions.numpy()
        grid = np.arange(height * width).reshape(height, width)
        groups = [
            grid[r : r + TILE_PX, c : c + TILE_PX].ravel()
            for r in range(0, height, TILE_PX)
            for c in range(0, width, TILE_PX)
        ]
        t, hit, normal = self._cast(pose[:3, 3], directions, groups, 0.0, math.inf, torch.float32)
        instance = self.hit_instance(hit, pose[:2, 3] + t[:, None] * directions[:, :2])
        sky = instance == 0
        shade = 0.55 + 0.45 * np.clip(normal @ SUN, 0, None)
        if self.looks is None:
            color = self.instance_color[instance] * shade[:, None]
        else:
            part = np.where(hit < len(self.layout.part_min), hit, -1)
            position = pose[:3, 3] + t[:, None] * directions
            color = self.looks.albedo(instance, part, position, normal) * shade[:, None]
        up = np.clip(directions[:, 2] / np.linalg.norm(directions, axis=1) / math.sin(math.radians(40)), 0, 1)
        horizon, zenith = (np.array(c, float) for c in SKY_COLORS)
        color[sky] = horizon + up[sky, None] * (zenith - horizon)
        if self.looks is not None:
            color = color * self.looks.camera_gain(index)
        depth = np.where(sky, 0.0, t)
        shape = (height, width)
        return (
            np.clip(color, 0, 255).round().astype(np.uint8).reshape(*shape, 3),
            self.instance_label[instance].reshape(shape),
            instance.astype(np.int32).reshape(shape),
            depth.astype(np.float32).reshape(shape),
        )

    def render(self, index: int) -> Frame:
        color, labels, instances, _ = self.render_camera(index)
        return Frame(
            name=CAMERAS[index][0],
            color=color,
            depth=None,
            intrinsics=self.intrinsics(index),
            cam_to_world=self.camera_pose(index),
            labels=labels,
            instances=instances,
            timestamp=0.0,
        )

    def _cast(
        self,
        origin: np.ndarray,
        directions: np.ndarray,
        groups: list[np.ndarray],
        time: float,
        max_range: float,
        dtype: torch.dtype,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``cast_rays`` from ``origin`` (map frame, at ``time``), group by group, each group
        against the parts that can meet it: t in the units of ``directions``, hit index
        (into all parts, then the six faces of the enclosing box), normal. ``dtype``: float64
        for LiDAR points (float32 is off by millimetres on thin poles 50 m away), float32
        for pixels."""
        lo, hi, axis = self.solids(time)
        spheres = _bounding_spheres(lo, hi, origin)
        length = np.linalg.norm(directions, axis=1)
        unit = directions / length[:, None]
        with np.errstate(divide="ignore"):  # axis-parallel rays: +-inf, as in the slab test
            inv = 1.0 / unit
        bounds = self.layout.bounds_min, self.layout.bounds_max
        exits = np.maximum((bounds[0] - origin) * inv, (bounds[1] - origin) * inv).min(axis=1)  # metres
        faces = len(lo) + np.arange(6)  # the enclosing box's hit indices
        t_out = np.empty(len(directions))
        hit_out = np.empty(len(directions), dtype=np.int64)
        normal_out = np.empty((len(directions), 3))
        box = [torch.from_numpy(a).to(dtype) for a in bounds]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # groups are small: intra-op threads cost more than they give (5x, measured)
        try:
            for group in groups:
                near = _parts_in_cone(spheres, unit[group], min(max_range, exits[group].max()))
                o = torch.from_numpy(np.broadcast_to(origin, (len(group), 3)).copy()).to(dtype)
                d = torch.from_numpy(directions[group]).to(dtype)
                solids = [torch.from_numpy(a[near]).to(dtype) for a in (lo, hi)]
                t, hit, normal = cast_rays(o, d, *solids, *box, torch.from_numpy(axis[near]))
                hit_out[group] = np.concatenate([near, faces])[hit.numpy()]
                t_out[group] = t.numpy()
                normal_out[group] = normal.numpy()
        finally:
            torch.set_num_threads(threads)
        return t_out, hit_out, normal_out


class ToyStreetDataset(Dataset[ToyStreetConfig]):
    """Synthetic streets seen by a LiDAR and six cameras; see the module docstring."""

    name = "toy-street"

    def scene_ids(self) -> list[str]:
        return [f"toy_street_{i:04d}" for i in range(self.config.num_scenes)]

    def _index(self, scene_id: str) -> int:
        if scene_id not in self.scene_ids():
            raise KeyError(f"toy-street dataset has no scene '{scene_id}' (num_scenes={self.config.num_scenes})")
        return int(scene_id.rsplit("_", 1)[1])

    def fingerprint(self, scene_id: str) -> str:
        payload = {"generator": GENERATOR_VERSION, "config": self.config.normalised(), "scene": scene_id}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def build(self, scene_id: str) -> ToyStreetScene:
        return make_toy_street(self.config, self._index(scene_id))

    def load(self, scene_id: str) -> SceneSource:
        scene = self.build(scene_id)
        lidar = scene.lidar()
        return SceneSource(
            scene_id=scene_id,
            points=lidar.points,
            labels=lidar.labels,
            instances=lidar.instances,
            sweep=lidar.sweep,
            timestamp=lidar.timestamp,
            class_names=NUSCENES16.classes,
            frame_names=[name for name, *_ in CAMERAS],
            read_frame=scene.render,
        )


def make_toy_street(config: ToyStreetConfig, index: int) -> ToyStreetScene:
    rng = np.random.default_rng([config.seed, index])
    layout = make_street(rng, config.moving_vehicles, config.pedestrians, config.cyclists)
    seed = (config.seed, index)
    if config.appearance == "class-colour":
        tint = np.random.default_rng([*seed, COLOR_STREAM])
        base = np.array([STREET_COLORS[c] if c is not None else SKY_COLORS[0] for c in layout.instance_class], float)
        spread = np.array([45.0 if c in ("car", "truck", "bus") else 12.0 for c in layout.instance_class])[:, None]
        colors = np.clip(base + tint.uniform(-1, 1, base.shape) * spread, 0, 255)
        return ToyStreetScene(layout=layout, config=config, noise_seed=seed, instance_color=colors)
    parts = (layout.part_min, layout.part_max, layout.part_axis, layout.part_instance)
    looks = draw_scene_looks(
        layout.instance_class, STREET_MATERIALS, parts, (*seed, APPEARANCE_STREAM), (*seed, EXPOSURE_STREAM)
    )
    colors = np.array([SKY_COLORS[0] if look is None else look.colors[0] for look in looks.looks[::2]], float)
    return ToyStreetScene(layout=layout, config=config, noise_seed=seed, instance_color=colors, looks=looks)


def _bounding_spheres(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each part's bounding sphere seen from ``origin``: the distance to its centre, its
    radius, the unit direction toward it and the half-angle it subtends."""
    centre, radius = (lo + hi) / 2, np.linalg.norm(hi - lo, axis=1) / 2
    offset = centre - origin
    distance = np.linalg.norm(offset, axis=1)
    toward = offset / np.maximum(distance, 1e-9)[:, None]
    spread = np.arcsin(np.clip(radius / np.maximum(distance, 1e-9), 0, 1))
    return distance, radius, toward, spread


def _parts_in_cone(spheres: tuple[np.ndarray, ...], unit: np.ndarray, reach: float) -> np.ndarray:
    """The parts a group of rays (``unit`` directions) can hit: those inside the group's
    cone (or around its origin) and nearer than ``reach`` (metres, where the rays leave
    the box or run out of range)."""
    distance, radius, toward, spread = spheres
    mean = unit.sum(0)
    mean /= np.linalg.norm(mean)
    cone = np.arccos(np.clip(unit @ mean, -1, 1)).max()
    angle = np.arccos(np.clip(toward @ mean, -1, 1))
    within = distance - radius <= reach
    return np.flatnonzero(within & ((angle - spread <= cone + 1e-6) | (distance <= radius)))
