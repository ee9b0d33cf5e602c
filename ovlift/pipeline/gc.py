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
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ovlift.cache_schema import Store, short
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
        if store.files_root is not None and store.files_root.is_dir():
            _collect_files(store.files_root, keep, result, dry_run)
        results.append(result)
    return results


def _collect_files(root: Path, keep: dict[str, set[str]], result: Collected, dry_run: bool) -> None:
    for folder in sorted(p for p in root.rglob("*") if p.is_dir() and _FILES_DIR.match(p.name)):
        if not folder.exists():
            continue
        path = str(folder.parent.relative_to(root))
        if folder.name in {short(fp) for fp in keep.get(path, ())}:
            continue
        result.removed.append(str(folder))
        result.bytes_freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        if not dry_run:
            shutil.rmtree(folder)
