"""``ovlift gc PLAN... [--yes]``: the only way results leave a store.

Published versions are immutable and stay when superseded (``--force``, a config
change, a concurrent writer), so that readers never lose what they opened and a
config switched back is a cache hit. ``gc`` keeps, for every group a given plan
would use now, the current version of that fingerprint; it removes every other
version, the pointers to them, and their plain files beside the store
(checkpoints of other fingerprints, and files a ``--force`` moved aside).
Cached text embeddings stay.

What it keeps is recomputed from the plans at gc time, so it refuses (``GcRefused``,
deleting nothing) whenever that recomputation may not be what made the store:

* an input a plan names is missing (a model folder not mounted: its fingerprint would
  change, and every group after it would look superseded);
* the store holds scenes the plans' datasets do not (a dataset folder with fewer scenes);
* a group the plans would use holds versions, but none at the fingerprint they give now
  (the plans were not run as given: other ``--set`` overrides, another environment, a
  change not run yet: run them first, or pass the same ``--set``); a group never written
  (a scene not run yet, or failing) is no reason, as gc deletes nothing there;
* staging entries exist (a run is writing, or one on another host died: only its owner
  can tell). This host's dead writers' entries are removed first (also in a dry run), as
  every run does.
* ``scenes/`` or ``global/`` is a symbolic link.

It never follows a symbolic link and removes nothing outside the store (``Store._remove``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from fsspec.implementations.local import LocalFileSystem

from ovlift.cache_schema import GLOBAL, SCENES, Store, short
from ovlift.cache_schema.store import url_to_fs
from ovlift.errors import name_list
from ovlift.pipeline.plan import Plan
from ovlift.pipeline.status import Expected, expected_fingerprints

_FILES_DIR = re.compile(r"^[0-9a-f]{12}(\.before-force-.+)?$")


class GcRefused(RuntimeError):
    """gc would delete on evidence it cannot trust; nothing was deleted."""


@dataclass
class Collected:
    store: str
    removed: list[str] = field(default_factory=list)
    """Store paths and files folders removed (or that would be, in a dry run)."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Bytes of each removed entry."""

    @property
    def bytes_freed(self) -> int:
        return sum(self.sizes.values())

    def add(self, entry: str, size: int) -> None:
        self.removed.append(entry)
        self.sizes[entry] = size


def collect(plans: list[Plan], dry_run: bool = False) -> list[Collected]:
    """Garbage-collect each store the plans use, keeping what any of them references.
    Every store is checked before anything is deleted (``GcRefused`` names why not)."""
    by_store: dict[str, list[Plan]] = {}
    for plan in plans:
        by_store.setdefault(plan.store, []).append(plan)
    checked = []
    for url, store_plans in by_store.items():
        store = Store(url)
        expected = [expected_fingerprints(plan, store) for plan in store_plans]
        refusals = _refusals(store, store_plans, expected)
        if refusals:
            raise GcRefused(f"gc of {url} refused, nothing deleted:\n  " + "\n  ".join(refusals))
        keep: dict[str, set[str]] = {}
        for found in expected:
            for path, e in found.items():
                keep.setdefault(path, set()).add(e.fingerprint)
        checked.append((store, keep))
    results = []
    for store, keep in checked:
        result = Collected(store.url)
        for entry, size in store.gc(keep, dry_run):
            result.add(entry, size)
        _collect_files(store.files_url, keep, result, dry_run)
        results.append(result)
    return results


def _refusals(store: Store, plans: list[Plan], expected: list[dict[str, Expected]]) -> list[str]:
    store.clean_stale()  # this host's dead writers' staging: never a live run's
    refusals = []
    if leftovers := store.leftovers():
        refusals.append(
            f"staging entries exist (a run writing now, or one that died on another host): {name_list(leftovers)}"
        )
    if store.local_root is not None and (
        linked := [a for a in (SCENES, GLOBAL) if (store.local_root / a).is_symlink()]
    ):
        refusals.append(f"{', '.join(linked)} in the store is a symbolic link: gc never deletes through one")
    known = {s for plan in plans for s in plan.dataset.scene_ids()}
    if extra := sorted(set(store.scene_ids()) - known):
        refusals.append(
            f"the store holds scenes the plans' datasets do not: {name_list(extra)} (if they are gone for good, "
            f"delete their folders under {store.url}/{SCENES}/ by hand)"
        )
    for plan, found in zip(plans, expected, strict=True):
        missing = sorted({f"{path}: {k}" for path, e in found.items() for k, v in e.inputs.items() if v == "missing"})
        if missing:
            refusals.append(f"{plan.source}: inputs missing (a folder not mounted?): {name_list(missing, 5)}")
            continue
        # only where gc would delete: a slot holding versions, none of them at the plan's fingerprint
        absent = [p for p, e in found.items() if store.refs(p) and store.read(p, fingerprint=e.fingerprint) is None]
        if absent:
            refusals.append(
                f"{plan.source}: {len(absent)} groups it would use are not in the store at the fingerprints it gives "
                f"now ({name_list(absent, 3)}): run it first, or pass the --set overrides it ran with"
            )
    return refusals


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
        if isinstance(fs, LocalFileSystem) and not _inside(target, root):
            continue  # reached through a link: not the store's to delete
        result.add(target if "://" not in url else fs.unstrip_protocol(target), size)
        if not dry_run:
            fs.rm(target, recursive=True)


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` lies inside ``root`` with no symbolic link on the way."""
    real_root = os.path.realpath(root)
    return os.path.realpath(path).startswith(real_root + os.sep) and not os.path.islink(path)
