"""Which stage is cached, stale or missing for which scene.

From the store alone, a group is *stale* when an upstream group it read has
since been replaced (its recorded input fingerprints no longer match). Given the
plan too, a group is also stale when the plan would now compute another
fingerprint (a config, version or source change), and stages that the plan
configures but the store lacks are *missing*.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ovlift.cache_schema import GroupState, Store
from ovlift.pipeline.plan import Plan, external_inputs


@dataclass(frozen=True)
class StageStatus:
    scene_id: str
    path: str
    state: str
    """``cached``, ``stale``, ``missing`` or ``incomplete``."""
    fingerprint: str | None
    reason: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def store_status(store: Store, plan: Plan | None = None) -> list[StageStatus]:
    scenes = set(store.scene_ids()) | (set(plan.dataset.scene_ids()) if plan else set())
    result: list[StageStatus] = []
    for scene_id in sorted(scenes):
        recorded: dict[str, tuple[GroupState, dict]] = {p: store.inspect(p) for p in store.stage_groups(scene_id)}
        expected = _expected(plan, store, scene_id) if plan else {}
        for path in sorted(set(recorded) | set(expected)):
            state, attrs = recorded.get(path, (GroupState.MISSING, {}))
            fp = attrs.get("fingerprint")
            if state is GroupState.MISSING:
                result.append(StageStatus(scene_id, path, "missing", None, "not in the store"))
            elif state is GroupState.INCOMPLETE:
                result.append(StageStatus(scene_id, path, "incomplete", fp, "not published whole"))
            elif path in expected and expected[path] != fp:
                result.append(StageStatus(scene_id, path, "stale", fp, "the plan now gives another fingerprint"))
            else:
                reason = _upstream_change(recorded, attrs)
                result.append(StageStatus(scene_id, path, "stale" if reason else "cached", fp, reason))
    return result


def _upstream_change(recorded: dict[str, tuple[GroupState, dict]], attrs: dict) -> str:
    for upstream, fp in attrs.get("input_fingerprints", {}).items():
        if upstream.startswith("dataset:"):
            continue
        state, up_attrs = recorded.get(upstream, (GroupState.MISSING, {}))
        if state is not GroupState.COMPLETE:
            return f"its input {upstream} is {state.value}"
        if up_attrs.get("fingerprint") != fp:
            return f"its input {upstream} changed since"
    return ""


def _expected(plan: Plan, store: Store, scene_id: str) -> dict[str, str]:
    """Fingerprint each planned stage group would have if the plan ran now."""
    expected: dict[str, str] = {}
    for key, stage_plan in plan.stages.items():
        inputs, groups = {}, {}
        for upstream in plan.upstream(key):
            up_path = plan.stages[upstream].group_path(scene_id)
            inputs[up_path] = expected[up_path]
            groups[upstream] = store.read(up_path)
        if all(g is not None for g in groups.values()):  # external inputs may need them
            inputs.update(external_inputs(plan, key, scene_id, groups))
        expected[stage_plan.group_path(scene_id)] = stage_plan.fingerprint(inputs)
    return expected
