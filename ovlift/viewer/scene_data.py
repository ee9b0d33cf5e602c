"""What the viewer shows of one scene, read from the store once: its points (a seeded subset
above a cap), their RGB, the label sets (the predict group's and the ground truth), the
frames' cameras, the feature sources a text can query and the vocabulary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ovlift.cache_schema import Store
from ovlift.cache_schema.groups.frames import FrameImages
from ovlift.cache_schema.groups.input import INPUT_SPEC
from ovlift.cache_schema.groups.predict import PREDICT_SPEC
from ovlift.cache_schema.store import StageGroup
from ovlift.plots import class_palette, colormap
from ovlift.query import QUERY_SOURCES, QueryError

MAX_POINTS = 1_000_000
"""Points the live viewer sends per scene; a larger scene shows a seeded random subset (a
million points draw smoothly on a laptop's GPU and take 9 MB to send)."""
MAX_CAMERAS = 60
"""Frustums drawn per scene, evenly spaced over the valid frames: more only clutter."""
LABEL_SETS = {"ensemble": "labels_ensemble", "student": "labels_3d", "2D": "labels_2d"}
"""The predict group's labels, by the name the page gives them."""
GROUND_TRUTH = "ground truth"
NONE = "(none)"
"""The class of points a label set leaves unlabelled (unseen by 2D, ignored in the ground truth)."""
NONE_COLOUR = (150, 150, 150)


@dataclass
class LabelSet:
    labels: np.ndarray
    """(n,) int64 index into ``classes``, -1 for none."""
    classes: list[str]

    def colours(self) -> np.ndarray:
        """(n, 3) uint8 class colours, grey for none."""
        palette = np.vstack([class_palette(self.classes), np.array(NONE_COLOUR, np.uint8)])
        return palette[self.labels]  # -1 reads the last row


@dataclass
class Camera:
    position: np.ndarray
    """(3,) centre, world frame."""
    wxyz: np.ndarray
    """(4,) rotation camera -> world (OpenCV axes: z forward, y down, as viser's frustums)."""
    fov: float
    """Vertical field of view, radians."""
    aspect: float


@dataclass
class SceneData:
    scene_id: str
    points: np.ndarray
    """(n, 3) float32, n = min(N, cap)."""
    rgb: np.ndarray
    """(n, 3) uint8: the scan's colours, or height through viridis where it has none."""
    keep: np.ndarray | None
    """(n,) indices of the shown points among the scene's N (None: all of them)."""
    total: int
    label_sets: dict[str, LabelSet]
    cameras: list[Camera]
    sources: list[str]
    """Features a text can query, as ``split_source`` reads them: ``student``, ``fused/<teacher>``, ..."""
    vocabulary: list[str]
    """The classes the predict group labelled with (else the ground truth's; else none)."""

    def take(self, values: np.ndarray) -> np.ndarray:
        """Per-point ``values`` of all N points, for the shown ones."""
        return values if self.keep is None else values[self.keep]


def load_scene(store: Store, scene_id: str, max_points: int = MAX_POINTS) -> SceneData:
    """One scene's arrays (``scene_id`` already checked to be one of the store's)."""
    scene = store.read(INPUT_SPEC.path(scene_id))
    if scene is None:
        raise QueryError(f"scene '{scene_id}': no complete 'input' group in {store.url}; run the plan first")
    points = scene.load("points")
    keep = subset(len(points), max_points)

    def take(values: np.ndarray) -> np.ndarray:
        return values if keep is None else values[keep]

    points = take(points)
    rgb = take(scene.load("colors")) if "colors" in scene else colormap(points[:, 2])
    predict = store.read(PREDICT_SPEC.path(scene_id))
    sets = label_sets(scene, predict, take)
    vocabulary = list(predict.info["classes"]) if predict is not None else list(scene.info.get("class_names") or [])
    sources = scene_sources(store, scene_id)
    return SceneData(scene_id, points, rgb, keep, len(scene.array("points")), sets, cameras(scene), sources, vocabulary)


def subset(n: int, cap: int) -> np.ndarray | None:
    """Sorted indices of a seeded random ``cap`` of ``n`` points (None when all fit)."""
    if n <= cap:
        return None
    return np.sort(np.random.default_rng(0).choice(n, cap, replace=False))


def label_sets(
    scene: StageGroup, predict: StageGroup | None, take: Callable[[np.ndarray], np.ndarray]
) -> dict[str, LabelSet]:
    sets = {}
    if predict is not None:
        classes = list(predict.info["classes"])
        for name, array in LABEL_SETS.items():
            sets[name] = LabelSet(_labels(take(predict.load(array)), len(classes)), classes)
    names = scene.info.get("class_names")
    if "labels" in scene and names:
        sets[GROUND_TRUTH] = LabelSet(_labels(take(scene.load("labels")), len(names)), list(names))
    return sets


def _labels(values: np.ndarray, classes: int) -> np.ndarray:
    labels = values.astype(np.int64)
    labels[(labels < 0) | (labels >= classes)] = -1
    return labels


def cameras(scene: StageGroup, limit: int = MAX_CAMERAS) -> list[Camera]:
    """The valid frames' colour cameras, at most ``limit`` of them, evenly spaced."""
    from scipy.spatial.transform import Rotation

    poses, intrinsics = scene.load("frames/cam_to_world"), scene.load("frames/intrinsics")
    valid = np.flatnonzero(scene.load("frames/pose_valid") & np.isfinite(poses).all(axis=(1, 2)))
    if len(valid) > limit:
        valid = valid[np.linspace(0, len(valid) - 1, limit).round().astype(int)]
    if not len(valid):
        return []
    height, width = FrameImages(scene).color_hw
    xyzw = Rotation.from_matrix(poses[valid, :3, :3]).as_quat()
    return [
        Camera(poses[i, :3, 3], np.roll(q, 1), float(2 * np.arctan2(height / 2, intrinsics[i, 1, 1])), width / height)
        for i, q in zip(valid, xyzw)
    ]


def scene_sources(store: Store, scene_id: str) -> list[str]:
    """The features of a scene that a text can query, named as the page shows them."""
    found = []
    for source, spec in QUERY_SOURCES.items():
        group = store.read(spec.path(scene_id))
        if group is None:
            continue
        if source == "student":
            found.append(source)
        elif source == "fused":
            found += [f"fused/{teacher}" for teacher in group.info.get("teachers", {})]
        else:
            found.append(f"{source}/{group.info['teacher']}")
    return found


def split_source(name: str) -> tuple[str, str | None]:
    """``fused/teacher_a`` -> (``fused``, ``teacher_a``); ``student`` -> (``student``, None)."""
    source, _, teacher = name.partition("/")
    return source, teacher or None


def overview(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A camera position and the point it looks at that show the whole scene (z up): from
    the -y side and high enough to see over a room's near wall, at a distance that fits the
    central 98 % of the points."""
    if not len(points):
        return np.array([0.0, -3.0, 2.0]), np.zeros(3)
    lo, hi = np.percentile(points, [1, 99], axis=0)
    centre, extent = (lo + hi) / 2, max(float((hi - lo)[:2].max()), 0.5)
    return centre + np.array([0.0, -0.75, 1.15]) * extent, centre


def point_size(points: np.ndarray) -> float:
    """A point's default size, metres: about the spacing of the points spread over the
    scene's footprint (extent / sqrt(n)), so that surfaces look closed without blobs."""
    if not len(points):
        return 0.02
    extent = max(float(np.ptp(points[:, :2], axis=0).max()), 0.1)
    return float(np.clip(extent / np.sqrt(len(points)), extent / 2000, extent / 100))
