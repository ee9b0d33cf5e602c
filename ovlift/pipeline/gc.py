"""``ovlift gc --keep PLAN...``: the only way results leave a store.

Published versions are immutable and stay when superseded (``--force``, a config
change, a concurrent writer), so that readers never lose what they opened and a
config switched back is a cache hit. ``gc`` keeps, for every group a given plan
would use now, the current version of that fingerprint; it removes every other
version, the pointers to them, and their plain files beside the store
(checkpoints of other fingerprints, and files a ``--force`` moved aside).
Cached text embeddings stay. Run it when no run writes to the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ovlift.cache_schema import Store, short
from ovlift.cache_schema.store import url_to_fs
from ovlift.pipeline.plan import Plan
from ovlift.pipeline.status import expected_fingerprints

_FILES_DIR = re.compile(r"^[0-9a-f]{12}(\.before-force-.+)?$")


@dataclass
class Collected:
    store: str
    removed: list[str] = field(default_factory=list)
    """Store paths and files folders removed (or that would be, in a dry run)."""
    bytes_freed: int = 0


def collect(plans: list[Plan], dry_run: bool = False) -> list[Collected]:
    """Garbage-collect each store the plans use, keeping what any of them references."""
    by_store: dict[str, list[Plan]] = {}
    for plan in plans:
        by_store.setdefault(plan.store, []).append(plan)
    results = []
    for url, store_plans in by_store.items():
        store = Store(url)
        keep: dict[str, set[str]] = {}
        for plan in store_plans:
            for path, expected in expected_fingerprints(plan, store).items():
                keep.setdefault(path, set()).add(expected.fingerprint)
        removed, freed = store.gc(keep, dry_run)
        result = Collected(url, removed, freed)
        _collect_files(store.files_url, keep, result, dry_run)
        results.append(result)
    return results


def _collect_files(url: str, keep: dict[str, set[str]], result: Collected, dry_run: bool) -> None:
    """Files folders (``<group path>/<fp12>[.before-force-...]``) of fingerprints not kept,
    on a local disk or an object store alike."""
    fs, root = url_to_fs(url)
    if not fs.isdir(root):
        return
    sizes: dict[str, int] = {}
    for key, info in fs.find(root, detail=True).items():
        parts = key[len(root.rstrip("/")) + 1 :].split("/")
        depth = next((i for i, part in enumerate(parts[:-1]) if _FILES_DIR.match(part)), None)
        if depth is not None:
            folder = "/".join(parts[: depth + 1])
            sizes[folder] = sizes.get(folder, 0) + int(info.get("size") or 0)
    for folder, size in sorted(sizes.items()):
        path, name = folder.rsplit("/", 1)
        if name in {short(fp) for fp in keep.get(path, ())}:
            continue
        target = f"{root.rstrip('/')}/{folder}"
        result.removed.append(target if "://" not in url else fs.unstrip_protocol(target))
        result.bytes_freed += size
        if not dry_run:
            fs.rm(target, recursive=True)
