"""The plain-Python runner: for each scene and stage, a cache hit or a rerun.

A stage group's fingerprint is a hash of the stage's name, implementation and
version, its normalised config, and the fingerprints of what it read (upstream
groups, or the dataset's source files for ``input``). The runner skips a stage
when a complete group with the expected fingerprint exists, so a change in a
stage's config reruns that stage and, through the fingerprints, everything
downstream of it, and nothing upstream.

No Prefect here: ``ovlift.flows`` wraps this runner.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ovlift.cache_schema import GroupMeta, StageGroup, Store, short
from ovlift.pipeline.plan import Plan, StagePlan, external_inputs
from ovlift.pipeline.text_cache import TextCache
from ovlift.progress import progress
from ovlift.stages.base import StageContext

log = logging.getLogger("ovlift")


@dataclass(frozen=True)
class Outcome:
    scene_id: str
    stage: str
    status: str
    """``cached`` (hit), ``ran``, ``failed``, or ``skipped`` (an upstream stage failed)."""
    seconds: float = 0.0
    fingerprint: str | None = None
    error: str | None = None


@dataclass
class RunReport:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> Counter:
        return Counter(o.status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("failed", "skipped")]

    def summary(self) -> str:
        c = self.counts()
        return (
            f"{len(self.outcomes)} scene-stages in {self.seconds:.1f} s: {c['ran']} ran, {c['cached']} cached, "
            f"{c['failed']} failed, {c['skipped']} skipped"
        )


class StageFailed(RuntimeError):
    pass


class Runner:
    def __init__(self, plan: Plan, store: Store | None = None) -> None:
        self.plan = plan
        self.store = store or Store(plan.store)
        self.text = TextCache(self.store, plan.device)

    def select_stages(self, stages: Sequence[str] | None) -> list[str]:
        """Plan keys to run, upstream first; a stage name selects all its variants."""
        return list(self.plan.stages) if not stages else self.plan.keys_for(list(stages))

    def select_scenes(self, scenes: Sequence[str] | None) -> list[str]:
        available = self.plan.dataset.scene_ids()
        if not scenes:
            return available
        unknown = [s for s in scenes if s not in available]
        if unknown:
            raise KeyError(f"scenes {unknown} are not in dataset '{self.plan.dataset.name}' ({len(available)} scenes)")
        return list(scenes)

    def run(
        self,
        stages: Sequence[str] | None = None,
        scenes: Sequence[str] | None = None,
        force: Iterable[str] = (),
        fail_fast: bool = False,
    ) -> RunReport:
        """Bring the selected stages of the selected scenes up to date.

        ``force`` reruns the named stages and everything downstream of them even
        on a cache hit. A failing scene does not stop the others (unless
        ``fail_fast``); its downstream stages are skipped and reported.
        """
        start = time.perf_counter()
        selected = self.select_stages(stages)
        forced = self.plan.downstream(list(force)) if force else set()
        for name in self.store.clean_stale():
            log.info("removed leftover of a killed process: %s", name)
        report = RunReport()
        for scene_id in progress(self.select_scenes(scenes), "scenes", unit="scene"):
            report.outcomes += self.run_scene(scene_id, selected, forced, fail_fast)
        report.seconds = time.perf_counter() - start
        log.info(report.summary())
        return report

    def run_scene(
        self, scene_id: str, stages: Sequence[str], forced: set[str] = frozenset(), fail_fast: bool = False
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        failed: set[str] = set()
        for key in stages:
            stage_plan = self.plan.stages[key]
            blocked = [u for u in self.plan.upstream(key) if u in failed]
            if blocked:
                failed.add(key)
                outcomes.append(Outcome(scene_id, key, "skipped", error=f"upstream {blocked} failed"))
                continue
            try:
                outcomes.append(self.run_stage(scene_id, stage_plan, force=key in forced))
            except Exception as err:  # noqa: BLE001 - reported per scene-stage
                if fail_fast:
                    raise
                failed.add(key)
                log.error("%s", err)
                log.debug("%s", traceback.format_exc())
                outcomes.append(Outcome(scene_id, key, "failed", error=str(err)))
        return outcomes

    def input_fingerprints(self, scene_id: str, stage_plan: StagePlan) -> tuple[dict[str, str], dict[str, StageGroup]]:
        """Fingerprints of what the stage reads, and the upstream groups themselves."""
        fps: dict[str, str] = {}
        groups: dict[str, StageGroup] = {}
        for upstream in self.plan.upstream(stage_plan.key):
            path = self.plan.stages[upstream].group_path(scene_id)
            group = self.store.read(path)
            if group is None:
                raise StageFailed(
                    f"scene '{scene_id}': stage '{stage_plan.key}' needs '{path}', which is missing or incomplete; "
                    f"run stage '{upstream}' first"
                )
            fps[path] = group.fingerprint
            groups[upstream] = group
        fps.update(external_inputs(self.plan, stage_plan.key, scene_id, groups))
        return fps, groups

    def run_stage(self, scene_id: str, stage_plan: StagePlan, force: bool = False) -> Outcome:
        stage = stage_plan.stage
        path = stage_plan.group_path(scene_id)
        inputs, groups = self.input_fingerprints(scene_id, stage_plan)
        fp = stage_plan.fingerprint(inputs)
        if not force and self.store.read(path, fingerprint=fp) is not None:
            log.debug("%s: cached (%s)", path, short(fp))
            return Outcome(scene_id, stage_plan.key, "cached", fingerprint=fp)
        start = time.perf_counter()
        meta = GroupMeta(
            stage=stage.name,
            implementation=stage.implementation,
            stage_version=stage.version,
            config=stage.config.normalised(),
            input_fingerprints=inputs,
            fingerprint=fp,
            info={},
        )
        ctx = StageContext(
            scene_id=scene_id,
            inputs=groups,
            dataset=self.plan.dataset if stage.reads_dataset else None,
            device=self.plan.device,
            log=log,
            text=self.text,
        )
        where = f"scene '{scene_id}', stage '{stage_plan.key}'"
        with self.store.writer(path, stage.spec, meta, where) as out:
            stage.run(ctx, out)
        seconds = time.perf_counter() - start
        log.info("%s: ran in %.2f s (%s)", path, seconds, short(fp))
        return Outcome(scene_id, stage_plan.key, "ran", seconds, fp)
