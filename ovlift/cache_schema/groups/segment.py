"""``scenes/<scene_id>/segment``: superpoints (ScanNet's mesh segmentator)."""

from __future__ import annotations

from ovlift.cache_schema.specs import ArraySpec, GroupSpec

SEGMENT_SPEC = GroupSpec(
    stage="segment",
    doc="Superpoints: geometrically homogeneous patches (Felzenszwalb on mesh or kNN edges).",
    arrays=(
        ArraySpec("superpoints", "int32", ("N",), (1 << 18,), "superpoint of each point (0..S-1), -1 = none"),
        ArraySpec("sizes", "int32", ("S",), (None,), "points per superpoint"),
    ),
    info={
        "graph": "mesh (the input's faces) or knn (estimated normals)",
        "count": "number of superpoints S",
    },
)
