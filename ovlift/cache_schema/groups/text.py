"""``global/text/<key>``: cached embeddings of class names."""

from __future__ import annotations

from ovlift.cache_schema.specs import ArraySpec, GroupSpec, Scope

TEXT_SPEC = GroupSpec(
    stage="text",
    scope=Scope.GLOBAL,
    variant="key",
    doc="Embeddings of class names (each through its templates, averaged, unit length).",
    arrays=(ArraySpec("embeddings", "float32", ("K", "D"), (None, None), "one unit vector per name"),),
    info={"encoder": "text encoder identity (kind:model-files:templates)", "names": "the embedded names, in order"},
)
