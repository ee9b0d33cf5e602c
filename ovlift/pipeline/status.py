"""Which stage is cached, stale or missing for which scene (and which global group).

From the store alone, a group is *stale* when an upstream group it read has
since been replaced (its recorded input fingerprints no longer match) or recomputed
(its recorded input versions are no longer the upstream's HEAD: ``--force``, a repair). Given the
plan too, a group is also stale when the plan would now compute another
fingerprint (a config, version or source change), and stages that the plan
configures but the store lacks are *missing*.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import NamedTuple

from ovlift.cache_schema import GLOBAL, GroupState, Store
from ovlift.pipeline.plan import Plan, external_inputs


class State(StrEnum):
    """How a group stands against the store (and the plan, if given)."""

    CACHED = "cached"
    STALE = "stale"
    """Upstream changed since, or the plan now gives another fingerprint."""
    MISSING = "missing"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class StageStatus:
    scene_id: str
    """The scene, or ``global``."""
    path: str
    state: State
    fingerprint: str | None
    reason: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def store_status(store: Store, plan: Plan | None = None) -> list[StageStatus]:
    recorded: dict[str, tuple[GroupState, dict]] = {}
    owner: dict[str, str] = {}
    heads: dict[str, str] = {}
    for path, scene_id in [(p, s) for s in store.scene_ids() for p in store.stage_groups(s)] + [
        (p, GLOBAL) for p in store.global_groups()
    ]:
        state, attrs, heads[path] = store.inspect(path)
        recorded[path], owner[path] = (state, attrs), scene_id
    expected = expected_fingerprints(plan, store) if plan else {}
    for path, e in expected.items():
        owner.setdefault(path, e.owner)
    result: list[StageStatus] = []
    for path in sorted(set(recorded) | set(expected), key=lambda p: (owner[p] == GLOBAL, owner[p], p)):
        state, attrs = recorded.get(path, (GroupState.MISSING, {}))
        fp = attrs.get("fingerprint")
        scene = owner[path]
        if state is GroupState.MISSING:
            result.append(StageStatus(scene, path, State.MISSING, None, "not in the store"))
        elif state is GroupState.INCOMPLETE:
            damaged = store.quarantined(path, heads[path])
            why = "damaged: moved aside by verify --repair" if damaged else "not published whole"
            result.append(StageStatus(scene, path, State.INCOMPLETE, fp, why))
        elif path in expected and expected[path].fingerprint != fp:
            reason = _changed_inputs(attrs.get("input_fingerprints", {}), expected[path].inputs)
            result.append(StageStatus(scene, path, State.STALE, fp, reason))
        else:
            reason = _upstream_change(recorded, heads, attrs)
            result.append(StageStatus(scene, path, State.STALE if reason else State.CACHED, fp, reason))
    return result


def _upstream_change(recorded: dict[str, tuple[GroupState, dict]], heads: dict[str, str], attrs: dict) -> str:
    versions = attrs.get("input_versions", {})
    for upstream, fp in attrs.get("input_fingerprints", {}).items():
        if ":" in upstream.split("/", 1)[0]:  # dataset:, files: ... are not groups
            continue
        state, up_attrs = recorded.get(upstream, (GroupState.MISSING, {}))
        if state is not GroupState.COMPLETE:
            return f"its input {upstream} is {state.value}"
        if up_attrs.get("fingerprint") != fp:
            return f"its input {upstream} changed since"
        if upstream in versions and versions[upstream] != heads.get(upstream):
            return f"its input {upstream} was recomputed since"
    return ""


def _changed_inputs(recorded: dict[str, str], now: dict[str, str]) -> str:
    """Why a group's fingerprint moved: the inputs (files, sources, upstream groups) that
    changed, or else its config or version."""
    changed = sorted(k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k))
    if not changed:
        return "its config or version changed"
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return f"changed since: {shown}"


class Expected(NamedTuple):
    fingerprint: str
    owner: str
    """The scene, or ``global``."""
    inputs: dict[str, str]
    """Input fingerprints (upstream groups, sources, external files) it would record."""


def expected_fingerprints(plan: Plan, store: Store) -> dict[str, Expected]:
    """The fingerprint, owner and inputs of each group the plan would write now (by path).

    Computed from the plan alone, except for external inputs that need an upstream
    group (e.g. the frame names of a ``cached`` teacher), which count once it exists."""
    fps: dict[str, str] = {}
    found: dict[str, Expected] = {}
    for key, stage_plan in plan.stages.items():
        owners_of_key = [None] if stage_plan.is_global else plan.scenes_for(key)
        for scene in owners_of_key:
            inputs, groups = {}, {}
            for upstream in plan.upstream(key):
                up = plan.stages[upstream]
                scenes = plan.scenes_for(key) if stage_plan.is_global and not up.is_global else [scene]
                for s in scenes:
                    up_path = up.group_path(s)
                    if up_path not in fps:
                        continue
                    inputs[up_path] = fps[up_path]
                    groups[upstream] = store.read(up_path)
            present = {name: g for name, g in groups.items() if g is not None}
            if len(present) == len(groups):
                inputs.update(external_inputs(plan, key, scene, present))
            path = stage_plan.group_path(scene)
            fps[path] = stage_plan.fingerprint(inputs)
            found[path] = Expected(fps[path], scene or GLOBAL, inputs)
    return found
