"""The contract between stages: store layout, array specs, fingerprints, atomic commit.

What each stage's group holds, and how to read it, is in ``ovlift.cache_schema.groups``.
"""

from ovlift.cache_schema.fingerprint import canonical_json, fingerprint, short
from ovlift.cache_schema.specs import GLOBAL, IGNORE_LABEL, SCENES, ArraySpec, GroupSpec, SchemaError, Scope
from ovlift.cache_schema.store import (
    GroupMeta,
    GroupState,
    GroupWriter,
    StageGroup,
    Store,
    StoreFormatError,
    iter_arrays,
    oracles_of,
)

__all__ = [
    "GLOBAL",
    "IGNORE_LABEL",
    "SCENES",
    "ArraySpec",
    "GroupMeta",
    "GroupSpec",
    "GroupState",
    "GroupWriter",
    "SchemaError",
    "Scope",
    "StageGroup",
    "Store",
    "StoreFormatError",
    "canonical_json",
    "fingerprint",
    "iter_arrays",
    "oracles_of",
    "short",
]
