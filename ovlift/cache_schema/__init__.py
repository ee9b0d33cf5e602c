"""The contract between stages: store layout, array specs, fingerprints, atomic commit."""

from ovlift.cache_schema.fingerprint import canonical_json, fingerprint, short
from ovlift.cache_schema.specs import IGNORE_LABEL, ArraySpec, GroupSpec, SchemaError
from ovlift.cache_schema.store import (
    GroupMeta,
    GroupState,
    GroupWriter,
    StageGroup,
    Store,
    global_group_path,
    iter_arrays,
    scene_group_path,
)

__all__ = [
    "IGNORE_LABEL",
    "ArraySpec",
    "GroupMeta",
    "GroupSpec",
    "GroupState",
    "GroupWriter",
    "SchemaError",
    "StageGroup",
    "Store",
    "canonical_json",
    "fingerprint",
    "global_group_path",
    "iter_arrays",
    "scene_group_path",
    "short",
]
