"""Publishing a group straight into a store, for tests that need groups no stage wrote."""

from __future__ import annotations

from ovlift.cache_schema import GroupMeta, Store
from ovlift.cache_schema.specs import GroupSpec


def publish_group(store: Store, spec: GroupSpec, scene_id: str, arrays: dict, info: dict) -> None:
    """Publish ``arrays`` and ``info`` as ``spec``'s group of ``scene_id`` (fingerprint ``<path>-fp``)."""
    path = spec.path(scene_id)
    meta = GroupMeta(spec.stage, "test", "1", {}, {}, f"{path}-fp", {})
    with store.writer(path, spec, meta, path) as out:
        for name, value in arrays.items():
            out.write(name, value)
        out.set_info(**info)
