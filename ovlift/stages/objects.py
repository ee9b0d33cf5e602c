"""``objects``: 3D objects for CUS3D's object-level filter, without labels.

``region-growing`` (default, label-free): spatially adjacent superpoints merge,
most similar pair first, while the mean lifted 2D features of the two growing
regions agree (cosine >= ``feature_similarity``); superpoints that no view saw
join the neighbour they touch most, so the filter completes them. CUS3D's paper
uses an unsupervised clustering network (PointClustering) that it does not
release; its code silently reads ScanNet's ground-truth instances instead.

``ground-truth`` reads the scene's instance annotation: an oracle for ablations
only. Groups built on it record it (``oracles`` in their attrs, carried
downstream), and every report made from them says so in its title.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.spatial import cKDTree

from ovlift.cache_schema import GroupWriter
from ovlift.cache_schema.groups.objects import OBJECTS_SPEC
from ovlift.cache_schema.groups.project import fused_features, fused_teacher
from ovlift.config import FrozenConfig
from ovlift.errors import StageInputError
from ovlift.stages.base import Stage, StageContext

ORACLE = "ground-truth instances"


class ObjectsConfig(FrozenConfig):
    source: Literal["region-growing", "ground-truth"] = "region-growing"
    """Label-free region growing over superpoints, or the ground-truth oracle (ablations only)."""
    teacher: str | None = None
    """Fused teacher whose features decide merges (None: the only one)."""
    feature_similarity: float = Field(0.9, ge=-1, le=1)
    """Two adjacent regions merge while the cosine of their mean features is at least this."""
    adjacency_m: float = Field(0.1, gt=0)
    """Superpoints touch where two of their points are nearer than this (k nearest neighbours)."""
    neighbours: int = Field(8, ge=1)
    """Nearest neighbours per point searched for contacts."""
    min_points: int = Field(1, ge=1)
    """Objects with fewer points are dropped (their points get -1)."""


class ObjectsStage(Stage[ObjectsConfig]):
    implementation = "cus3d"
    version = "1"
    spec = OBJECTS_SPEC
    reads = ("input",)
    optional_reads = ("segment", "project")

    @property
    def oracle(self) -> str | None:
        return ORACLE if self.config.source == "ground-truth" else None

    def select_inputs(self, name: str, keys: list[str]) -> list[str]:
        return [] if name in self.optional_reads and self.config.source == "ground-truth" else keys

    def check_inputs(self, keys: list[str]) -> None:
        if self.config.source == "region-growing" and not {"segment", "project"} <= set(keys):
            raise ValueError("source 'region-growing' needs stages 'segment' and 'project' configured")

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        cfg = self.config
        scene = ctx.inputs["input"]
        if cfg.source == "ground-truth":
            if "instances" not in scene:
                raise StageInputError(f"{ctx.where()}: source 'ground-truth' needs array 'instances', which is absent")
            objects = scene.load("instances").astype(np.int64)
        else:
            project = ctx.inputs["project"]
            teacher = fused_teacher(project, cfg.teacher, ctx.where())
            objects = grow_regions(
                scene.load("points"),
                ctx.inputs["segment"].load("superpoints").astype(np.int64),
                fused_features(project, teacher),
                project.load(f"fused/{teacher}/seen"),
                cfg,
            )
        objects = renumber(objects, cfg.min_points)
        sizes = np.bincount(objects[objects >= 0], minlength=int(objects.max()) + 1 if len(objects) else 0)
        out.write("objects", objects.astype(np.int32))
        out.write("sizes", sizes.astype(np.int32))
        out.set_info(source=cfg.source, count=len(sizes))


def renumber(ids: np.ndarray, min_points: int = 1) -> np.ndarray:
    """Ids 0..O-1 in order of each group's first point; groups under ``min_points`` and
    negative ids become -1."""
    out = np.full(len(ids), -1, dtype=np.int64)
    valid = ids >= 0
    if not valid.any():
        return out
    uniq, first, inverse, counts = np.unique(ids[valid], return_index=True, return_inverse=True, return_counts=True)
    keep = counts >= min_points
    rank = np.full(len(uniq), -1, dtype=np.int64)
    kept = np.flatnonzero(keep)
    rank[kept[np.argsort(first[kept], kind="stable")]] = np.arange(len(kept))
    out[valid] = rank[inverse]
    return out


def superpoint_contacts(points: np.ndarray, superpoints: np.ndarray, radius: float, k: int) -> np.ndarray:
    """(P, 3) int64 rows (a, b, contacts), a < b: superpoints with points nearer than ``radius``."""
    tree = cKDTree(points)
    distance, neighbour = tree.query(points, k=min(k + 1, len(points)), distance_upper_bound=radius)
    a = np.repeat(superpoints, neighbour.shape[1])
    found = neighbour.reshape(-1) < len(points)
    b = np.full(a.shape, -1, dtype=np.int64)
    b[found] = superpoints[neighbour.reshape(-1)[found]]
    touch = found & (a >= 0) & (b >= 0) & (a != b)
    pairs = np.sort(np.stack([a[touch], b[touch]], 1), axis=1)
    if not len(pairs):
        return np.zeros((0, 3), dtype=np.int64)
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    return np.concatenate([uniq, counts[:, None]], 1)


def grow_regions(
    points: np.ndarray, superpoints: np.ndarray, features: np.ndarray, seen: np.ndarray, cfg: ObjectsConfig
) -> np.ndarray:
    """(N,) region of each point (a superpoint id of its region), -1 outside superpoints."""
    count = int(superpoints.max()) + 1 if len(superpoints) else 0
    unit = F.normalize(torch.from_numpy(features).to(torch.float64), dim=1).numpy()
    use = seen & (superpoints >= 0)
    sums = np.zeros((count, unit.shape[1]))
    np.add.at(sums, superpoints[use], unit[use])
    has_feature = np.bincount(superpoints[use], minlength=count) > 0
    contacts = superpoint_contacts(points, superpoints, cfg.adjacency_m, cfg.neighbours)
    parent = np.arange(count)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def cosine(a: int, b: int) -> float:
        return float(sums[a] @ sums[b] / max(np.linalg.norm(sums[a]) * np.linalg.norm(sums[b]), 1e-12))

    both = has_feature[contacts[:, 0]] & has_feature[contacts[:, 1]]
    seen_pairs = contacts[both]
    similarity = np.array([cosine(a, b) for a, b, _ in seen_pairs])
    for index in np.argsort(-similarity, kind="stable"):  # most similar first; ties: pair order
        a, b = find(int(seen_pairs[index, 0])), find(int(seen_pairs[index, 1]))
        if a != b and cosine(a, b) >= cfg.feature_similarity:
            parent[b] = a
            sums[a] += sums[b]
    unseen_pairs = contacts[~both]
    for index in np.argsort(-unseen_pairs[:, 2], kind="stable"):  # most contacts first
        a, b = find(int(unseen_pairs[index, 0])), find(int(unseen_pairs[index, 1]))
        if a != b and has_feature[a] != has_feature[b]:
            seen_root, other = (a, b) if has_feature[a] else (b, a)
            parent[other] = seen_root
    roots = np.array([find(i) for i in range(count)], dtype=np.int64)
    return np.where(superpoints >= 0, roots[superpoints.clip(min=0)], -1)
