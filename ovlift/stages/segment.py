"""``segment``: superpoints, ScanNet's mesh segmentator (Felzenszwalb on normals).

A scene with a mesh is segmented on its mesh edges with normals computed from the
mesh (as ScanNet's segmentator does); a cloud without one (LiDAR, RGB-D folders)
on a k-nearest-neighbour graph with normals estimated by PCA. Superpoints are
what ``objects`` grows label-free objects from.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ovlift.cache_schema import GroupWriter
from ovlift.cache_schema.groups.segment import SEGMENT_SPEC
from ovlift.config import FrozenConfig
from ovlift.errors import StageInputError
from ovlift.kernels.superpoints import superpoints
from ovlift.stages.base import Stage, StageContext


class SegmentConfig(FrozenConfig):
    k_threshold: float = Field(0.01, gt=0)
    """Felzenszwalb's k: merge while the edge weight <= min internal threshold + k / |C| (ScanNet: 0.01)."""
    min_vertices: int = Field(20, ge=1)
    """Segments smaller than this merge into a neighbour (ScanNet: 20, SAS: 60)."""
    graph: Literal["auto", "mesh", "knn"] = "auto"
    """Edges: the mesh's (auto when the input has faces) or a kNN graph of the points."""
    knn: int = Field(8, ge=1)
    """Neighbours per point of the kNN graph (meshless clouds)."""


class SegmentStage(Stage[SegmentConfig]):
    implementation = "scannet"
    version = "1"
    spec = SEGMENT_SPEC
    reads = ("input",)

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        cfg = self.config
        scene = ctx.inputs["input"]
        has_mesh = "faces" in scene
        if cfg.graph == "mesh" and not has_mesh:
            raise StageInputError(f"{ctx.where()}: graph 'mesh' needs array 'faces', which the input lacks")
        use_mesh = has_mesh and cfg.graph != "knn"
        points = scene.load("points").astype(np.float64)
        faces = scene.load("faces").astype(np.int64) if use_mesh else None
        ctx.log.info("%s: segmenting %d points on %s edges", ctx.where(), len(points), "mesh" if use_mesh else "kNN")
        ids = superpoints(points, faces, k_threshold=cfg.k_threshold, min_vertices=cfg.min_vertices, knn=cfg.knn)
        sizes = np.bincount(ids[ids >= 0], minlength=int(ids.max()) + 1 if len(ids) else 0)
        out.write("superpoints", ids.astype(np.int32))
        out.write("sizes", sizes.astype(np.int32))
        out.set_info(graph="mesh" if use_mesh else "knn", count=len(sizes))
