"""``scenes/<scene_id>/objects``: 3D objects, label-free unless the plan names the oracle."""

from __future__ import annotations

from ovlift.cache_schema.specs import ArraySpec, GroupSpec

OBJECTS_SPEC = GroupSpec(
    stage="objects",
    doc="Object of each point (label-free grouping, or ground-truth instances as an oracle).",
    arrays=(
        ArraySpec("objects", "int32", ("N",), (1 << 18,), "object of each point (0..O-1), -1 = none"),
        ArraySpec("sizes", "int32", ("O",), (None,), "points per object"),
    ),
    info={
        "source": "what grouped the points: region-growing (label-free) or ground-truth (oracle)",
        "count": "number of objects O",
    },
)
