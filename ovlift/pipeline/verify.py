"""``ovlift verify``: read every chunk of the versions a run may reuse, report the damage,
and (``--repair``) move damaged versions aside so that the next run recomputes them.

What is checked is in ``ovlift.cache_schema.integrity``. A repaired group's readers rerun
too: the recomputed version is a new one, and the runner reruns whatever read another
version of an input (``GroupMeta.input_versions``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ovlift.cache_schema import GLOBAL, SCENES, Store
from ovlift.cache_schema.integrity import Damage, verify_version
from ovlift.progress import progress


@dataclass
class VerifyReport:
    damage: list[Damage] = field(default_factory=list)
    versions: int = 0
    unchecked: list[str] = field(default_factory=list)
    """Versions published before checksums (no manifest: only their chunks' decode was checked)."""
    nbytes: int = 0
    seconds: float = 0.0
    moved: dict[str, str] = field(default_factory=dict)
    """Damaged version (``path/version``) -> where ``--repair`` moved it."""

    @property
    def damaged_versions(self) -> list[str]:
        return sorted({f"{d.path}/{d.version}" for d in self.damage})

    def summary(self) -> str:
        rate = self.nbytes / 2**20 / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.versions} versions, {self.nbytes / 2**20:.1f} MiB read in {self.seconds:.1f} s ({rate:.0f} MiB/s): "
            f"{len(self.damaged_versions)} damaged ({len(self.damage)} pieces)"
            + (f", {len(self.unchecked)} without a manifest (chunks decoded only)" if self.unchecked else "")
        )


def selected_groups(store: Store, scenes: Sequence[str] | None, stages: Sequence[str] | None) -> list[str]:
    """Slots to verify: those of the scenes given (every scene if none; ``global`` names the
    global groups, which are in unless scenes are given), of the stages given (all if none)."""
    wanted = set(scenes or [])
    scene_ids = [s for s in store.scene_ids() if not wanted or s in wanted]
    unknown = wanted - set(store.scene_ids()) - {GLOBAL}
    if unknown:
        raise KeyError(f"scenes {sorted(unknown)} are not in store '{store.url}'")
    paths = [p for s in scene_ids for p in store.stage_groups(s)]
    if not wanted or GLOBAL in wanted:
        paths += store.global_groups()
    if stages:
        keys = {p: _keys_of(p) for p in paths}
        unknown = set(stages) - {k for found in keys.values() for k in found}
        if unknown:
            found = sorted({k for ks in keys.values() for k in ks})
            raise KeyError(f"stages {sorted(unknown)} have no group in store '{store.url}'; it has {found}")
        paths = [p for p in paths if keys[p] & set(stages)]
    return paths


def _keys_of(path: str) -> set[str]:
    """The stage name and the plan key (``name/variant``) of a slot."""
    parts = path.split("/")[2 if path.startswith(f"{SCENES}/") else 1 :]
    return {parts[0], "/".join(parts)}


def verify(
    store: Store, scenes: Sequence[str] | None = None, stages: Sequence[str] | None = None, repair: bool = False
) -> VerifyReport:
    report = VerifyReport()
    start = time.perf_counter()
    work = [(p, v, d) for p in selected_groups(store, scenes, stages) for v, d in store.reusable_versions(p).items()]
    for path, version, recorded in progress(work, "verify", unit="version"):
        if store.open_version(path, version) is None and store.quarantined(path, version):
            continue  # moved aside by an earlier repair; its pointers wait for the next run
        damage, nbytes = verify_version(store, path, version, recorded)
        report.versions += 1
        report.nbytes += nbytes
        report.damage += damage
        if recorded is None:
            report.unchecked.append(f"{path}/{version}")
        if damage and repair:
            report.moved[f"{path}/{version}"] = store.quarantine(path, version, damage)
    report.seconds = time.perf_counter() - start
    return report
