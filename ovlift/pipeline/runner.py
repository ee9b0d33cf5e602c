"""The plain-Python runner: for each scene and stage, a cache hit or a rerun.

A stage group's fingerprint is a hash of the stage's name, implementation and
version, its normalised config, and the fingerprints of what it read (upstream
groups, or the dataset's source files for ``input``). The runner skips a stage
when a complete group with the expected fingerprint exists and was made from the
versions of its inputs that are current now, so a change in a stage's config
reruns that stage and, through the fingerprints, everything downstream of it,
and nothing upstream; a rerun under the same fingerprint (``--force``, a group
that ``ovlift verify --repair`` moved aside) publishes a new version, and through
the recorded input versions exactly the groups that read it rerun too.

No Prefect here: ``ovlift.flows`` wraps this runner.
"""

from __future__ import annotations

import errno
import logging
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum

from ovlift.cache_schema import GLOBAL, GroupMeta, StageGroup, Store, oracles_of, short
from ovlift.cache_schema.files import group_files
from ovlift.errors import name_list
from ovlift.names import check_name
from ovlift.pipeline.plan import Plan, StagePlan, external_inputs
from ovlift.pipeline.status import State, store_status
from ovlift.pipeline.text_cache import TextCache
from ovlift.progress import progress
from ovlift.stages.base import StageContext

log = logging.getLogger("ovlift")


class Status(StrEnum):
    """What happened to one scene-stage in a run."""

    CACHED = "cached"
    """A complete group with the expected fingerprint was there."""
    RAN = "ran"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not attempted: a stage it reads failed."""


@dataclass(frozen=True)
class Outcome:
    scene_id: str
    """The scene, or ``global``."""
    stage: str
    """The plan key."""
    status: Status
    seconds: float = 0.0
    fingerprint: str | None = None
    error: str | None = None
    worker: str | None = None
    """The Dask worker it ran on (flows), None in a plain run."""

    @property
    def ok(self) -> bool:
        return self.status in (Status.CACHED, Status.RAN)


@dataclass(frozen=True)
class RunOptions:
    """How a run treats cache hits and failures, the same for every scene and stage."""

    force: frozenset[str] = frozenset()
    """Plan keys rerun even on a cache hit, on the selected scenes. What reads a rerun group
    reruns because the version it read is no longer current, and nothing else does."""
    fail_fast: bool = False
    """Raise the first failure instead of reporting it and going on with other scenes."""
    retries: int = 3
    """Reruns of a stage that failed with a transient I/O error (``is_transient``)."""
    retry_delay_s: float = 2.0
    """Wait before the first rerun; doubled before each next one."""


@dataclass
class RunReport:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> Counter:
        return Counter(o.status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def summary(self) -> str:
        c = self.counts()
        return (
            f"{len(self.outcomes)} scene-stages in {self.seconds:.1f} s: {c[Status.RAN]} ran, "
            f"{c[Status.CACHED]} cached, {c[Status.FAILED]} failed, {c[Status.SKIPPED]} skipped"
        )

    def by_stage(self) -> dict[str, Counter]:
        """Plan key -> how many of its scene-stages ran, were cached, failed, were skipped."""
        rows: dict[str, Counter] = {}
        for o in self.outcomes:
            rows.setdefault(o.stage, Counter())[o.status] += 1
        return rows

    def markdown(self) -> str:
        """The run table: a row per scene (``global`` last), a column per stage, the status in
        each cell; then the failures with their errors."""
        stages = list(dict.fromkeys(o.stage for o in self.outcomes))
        cells: dict[str, dict[str, str]] = {}
        for o in self.outcomes:
            cells.setdefault(o.scene_id, {})[o.stage] = o.status.value
        scenes = sorted(s for s in cells if s != GLOBAL) + ([GLOBAL] if GLOBAL in cells else [])
        lines = [self.summary(), "", "| scene | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(cells[s].get(k, "") for k in stages) + " |" for s in scenes]
        if self.failed:
            lines += ["", "| scene | stage | status | error |", "|---|---|---|---|"]
            for o in self.failed:
                error = (o.error or "").partition("\n")[0].replace("|", "\\|")
                lines.append(f"| {o.scene_id} | {o.stage} | {o.status} | {error} |")
        return "\n".join(lines) + "\n"


def failures(outcomes: Iterable[Outcome]) -> frozenset[tuple[str, str]]:
    """(scene or ``global``, key) of the failed and skipped outcomes."""
    return frozenset((o.scene_id, o.stage) for o in outcomes if not o.ok)


TRANSIENT_ERRORS = frozenset(
    {
        # botocore / aiobotocore (s3fs): its ConnectionError is the base of EndpointConnectionError,
        # ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError
        "ConnectionError",
        "HTTPClientError",
        # aiohttp (s3fs, gcsfs, http)
        "ClientConnectionError",
        "ClientPayloadError",
        "ServerTimeoutError",
    }
)
"""Names of exception classes that mean the network or an object store hiccuped (matched
by name along the class's MRO, so that no client library is imported to check)."""
TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EREMOTEIO})
"""s3fs's translation of HTTP 503 / SlowDown (EBUSY) and 500 InternalError (EREMOTEIO)."""


def is_transient(err: BaseException | None) -> bool:
    """Whether ``err`` (or what it was raised from) is an I/O error that a rerun may not meet:
    a connection reset or refused, a timeout, an object store's connection errors. Bad input
    (a missing file, a malformed array, a validation error) is never transient."""
    while err is not None:
        if isinstance(err, ConnectionError | TimeoutError):  # resets, refusals, broken pipes
            return True
        if any(c.__name__ in TRANSIENT_ERRORS for c in type(err).__mro__):
            return True
        if isinstance(err, OSError) and err.errno in TRANSIENT_ERRNOS:
            return True
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return False


class StageFailed(RuntimeError):
    pass


class StaleUpstream(StageFailed):
    """A run restricted to some stages (``--no-upstream``) would read outdated groups."""


class Runner:
    def __init__(self, plan: Plan, store: Store | None = None) -> None:
        self.plan = plan
        self.store = store or Store(plan.store)
        self.text = TextCache(self.store, plan.device)

    def select_stages(self, stages: Sequence[str] | None, upstream: bool = True) -> list[str]:
        """Plan keys to run, upstream first; a stage name selects all its variants. With
        ``upstream`` (as ``make`` would) the stages they read come too: those up to date
        are cache hits, stale ones rerun before anything reads them."""
        if not stages:
            return list(self.plan.stages)
        keys = self.plan.upstream_closure(list(stages)) if upstream else set(self.plan.keys_for(list(stages)))
        return [k for k in self.plan.stages if k in keys]

    def stale_upstream(self, keys: Sequence[str], scenes: Sequence[str] | None) -> list[str]:
        """'path: why' of each group that ``keys`` read (outside ``keys``) and that is not
        up to date with the plan, for the selected scenes."""
        upstream = self.plan.upstream_closure(list(keys)) - set(keys)
        paths = {
            self.plan.stages[u].group_path(s)
            for u in upstream
            for s in ([None] if self.plan.stages[u].is_global else self.select_scenes(scenes))
            if s is None or s in self.plan.scenes_for(u)
        }
        return [
            f"{row.path}: {row.state} ({row.reason})"
            for row in store_status(self.store, self.plan)
            if row.path in paths and row.state is not State.CACHED
        ]

    def select_scenes(self, scenes: Sequence[str] | None) -> list[str]:
        available = self.plan.dataset.scene_ids()
        for scene_id in available:  # ids from dataset files become folders of the store
            check_name(scene_id, f"dataset '{self.plan.dataset.name}' gives the scene id")
        if not scenes:
            return available
        unknown = [s for s in scenes if s not in available]
        if unknown:
            raise KeyError(
                f"scenes {unknown} are not in dataset '{self.plan.dataset.name}'; its scenes: {name_list(available)}"
            )
        return list(scenes)

    def phases(self, keys: Sequence[str]) -> list[tuple[str, list[str]]]:
        """Consecutive per-scene stages run scene by scene; each global stage alone:
        [("scene", [input, extract2d/a, project]), ("global", [distill]), ...]."""
        result: list[tuple[str, list[str]]] = []
        for key in keys:
            kind = "global" if self.plan.stages[key].is_global else "scene"
            if kind == "scene" and result and result[-1][0] == "scene":
                result[-1][1].append(key)
            else:
                result.append((kind, [key]))
        return result

    def run(
        self,
        stages: Sequence[str] | None = None,
        scenes: Sequence[str] | None = None,
        force: Iterable[str] = (),
        fail_fast: bool = False,
        upstream: bool = True,
    ) -> RunReport:
        """Bring the selected stages up to date.

        Per-scene stages run on the selected scenes (within each stage's split);
        a global stage runs once over its split, whatever ``scenes`` says.
        ``force`` reruns the named stages (on the selected scenes) even on a
        cache hit, and downstream exactly the groups that read a rerun group. A
        failing scene does not stop the others (unless ``fail_fast``); its
        downstream stages are skipped and reported. The
        stages that the selected ones read are brought up to date first, unless
        ``upstream`` is False: then a stale or missing one stops the run, named.
        """
        start = time.perf_counter()
        selected = self.select_stages(stages, upstream)
        if stages and not upstream:
            stale = self.stale_upstream(selected, scenes)
            if stale:
                raise StaleUpstream(
                    f"stages {selected} read groups that are not up to date with the plan {self.plan.source} "
                    "(run without --no-upstream to update them first):\n  " + "\n  ".join(stale)
                )
        options = RunOptions(frozenset(self.plan.keys_for(list(force))), fail_fast)
        if idle := sorted(options.force - set(selected)):
            log.warning("--force %s: not among the stages this run runs (%s): nothing forced there", idle, selected)
        for name in self.store.clean_stale():
            log.info("removed leftover of a killed process: %s", name)
        report = RunReport()
        for kind, keys in self.phases(selected):
            if kind == "global":
                report.outcomes.append(self.run_global(keys[0], options, failures(report.outcomes)))
                continue
            failed_before = failures(report.outcomes)
            for scene_id in progress(self.select_scenes(scenes), "scenes", unit="scene"):
                report.outcomes += self.run_scene(scene_id, keys, options, failed_before)
        report.seconds = time.perf_counter() - start
        log.info(report.summary())
        return report

    def run_scene(
        self,
        scene_id: str,
        keys: Sequence[str],
        options: RunOptions = RunOptions(),
        failed_before: frozenset[tuple[str, str]] = frozenset(),
    ) -> list[Outcome]:
        """The per-scene stages ``keys`` for one scene (those whose split has it).

        ``failed_before`` holds the (scene or ``global``, key) pairs that failed in earlier
        phases; a stage reading one of them, or a stage failed here, is skipped.
        """
        outcomes: list[Outcome] = []
        for key in keys:
            if scene_id not in self.plan.scenes_for(key):
                continue
            failed = failed_before | failures(outcomes)
            blocked = [u for u in self.plan.upstream(key) if (scene_id, u) in failed or (GLOBAL, u) in failed]
            if blocked:
                outcomes.append(Outcome(scene_id, key, Status.SKIPPED, error=f"upstream {blocked} failed"))
                continue
            outcomes.append(self._attempt(scene_id, key, options))
        return outcomes

    def run_global(
        self, key: str, options: RunOptions = RunOptions(), failed_before: frozenset[tuple[str, str]] = frozenset()
    ) -> Outcome:
        """A global stage, unless an upstream stage failed for one of its scenes."""
        scenes = set(self.plan.scenes_for(key)) | {GLOBAL}
        upstream = set(self.plan.upstream(key))
        blocked = sorted({u for (s, u) in failed_before if u in upstream and s in scenes})
        if blocked:
            return Outcome(GLOBAL, key, Status.SKIPPED, error=f"upstream {blocked} failed for some scenes")
        return self._attempt(None, key, options)

    def _attempt(self, scene_id: str | None, key: str, options: RunOptions) -> Outcome:
        """Run one stage; a transient I/O error reruns it (``options.retries`` times, with
        backoff: nothing of a failed attempt is published), any other error fails it at once."""
        attempt = 0
        while True:
            try:
                return self.run_stage(scene_id, self.plan.stages[key], force=key in options.force)
            except Exception as err:
                if attempt < options.retries and is_transient(err):
                    attempt += 1
                    delay = options.retry_delay_s * 2 ** (attempt - 1)
                    where = f"scene '{scene_id}', stage '{key}'" if scene_id else f"global stage '{key}'"
                    log.warning(
                        "%s: %s (transient); retry %d of %d in %.0f s", where, err, attempt, options.retries, delay
                    )
                    time.sleep(delay)
                    continue
                if options.fail_fast:
                    raise
                log.error("%s", err)
                log.debug("%s", traceback.format_exc())
                return Outcome(scene_id or GLOBAL, key, Status.FAILED, error=str(err))

    def _upstream_group(self, scene_id: str | None, key: str, upstream: str) -> tuple[str, StageGroup]:
        path = self.plan.stages[upstream].group_path(scene_id)
        group = self.store.read(path)
        if group is None:
            where = f"scene '{scene_id}'" if scene_id else "global stage"
            raise StageFailed(
                f"{where}: stage '{key}' needs '{path}', which is missing or incomplete; run stage '{upstream}' first"
            )
        return path, group

    def input_fingerprints(
        self, scene_id: str | None, stage_plan: StagePlan
    ) -> tuple[dict[str, str], dict[str, StageGroup], dict[str, dict[str, StageGroup]], dict[str, StageGroup]]:
        """Fingerprints of what the stage reads, its global/own-scene input groups,
        (global stages) the per-scene groups of each scene of its split, and every
        input group read by its path."""
        fps: dict[str, str] = {}
        read: dict[str, StageGroup] = {}
        groups: dict[str, StageGroup] = {}
        per_scene: dict[str, dict[str, StageGroup]] = {}
        for upstream in self.plan.upstream(stage_plan.key):
            if stage_plan.is_global and not self.plan.stages[upstream].is_global:
                for scene in self.plan.scenes_for(stage_plan.key):
                    path, group = self._upstream_group(scene, stage_plan.key, upstream)
                    fps[path], read[path] = group.fingerprint, group
                    per_scene.setdefault(scene, {})[upstream] = group
                continue
            path, group = self._upstream_group(scene_id, stage_plan.key, upstream)
            fps[path], read[path] = group.fingerprint, group
            groups[upstream] = group
        fps.update(external_inputs(self.plan, stage_plan.key, scene_id, groups))
        return fps, groups, per_scene, read

    def run_stage(self, scene_id: str | None, stage_plan: StagePlan, force: bool = False) -> Outcome:
        stage = stage_plan.stage
        path = stage_plan.group_path(scene_id)
        inputs, groups, per_scene, read = self.input_fingerprints(scene_id, stage_plan)
        fp = stage_plan.fingerprint(inputs)
        cached = None if force else self.store.read(path, fingerprint=fp)
        if cached is not None and (recomputed := _recomputed_inputs(cached, read)):
            log.info("%s: rerun: %s recomputed since it was made", path, name_list(recomputed))
            cached, force = None, True  # its files (checkpoints) are that run's: never resumed from
        if cached is not None:
            self.store.set_head(cached)  # e.g. a config switched back: downstream reads this version
            log.debug("%s: cached (%s)", path, short(fp))
            return Outcome(scene_id or GLOBAL, stage_plan.key, Status.CACHED, fingerprint=fp)
        start = time.perf_counter()
        meta = GroupMeta(
            stage=stage.name,
            implementation=stage.implementation,
            stage_version=stage.version,
            config=stage.config.normalised(),
            input_fingerprints=inputs,
            fingerprint=fp,
            info={},
            oracles=oracles_of([*groups.values(), *(g for s in per_scene.values() for g in s.values())], stage.oracle),
            input_versions={p: g.version for p, g in read.items()},
        )
        where = f"scene '{scene_id}', stage '{stage_plan.key}'" if scene_id else f"global stage '{stage_plan.key}'"
        with ExitStack() as stack:
            files = None
            if stage.writes_files:
                files = stack.enter_context(group_files(self.store.files_url, path, short(fp), force))
            validation = set(self.plan.validation_scenes(stage_plan.key)) if stage_plan.is_global else set()
            ctx = StageContext(
                scene_id=scene_id,
                inputs=groups,
                dataset=self.plan.dataset if stage.reads_dataset else None,
                device=self.plan.device,
                log=log,
                text=self.text,
                scene_inputs={s: g for s, g in per_scene.items() if s not in validation},
                validation_inputs={s: g for s, g in per_scene.items() if s in validation},
                files=files.local if files else None,
                files_url=files.url if files else None,
            )
            with self.store.writer(path, stage.spec, meta, where) as out:
                stage.run(ctx, out)
        seconds = time.perf_counter() - start
        log.info("%s: ran in %.2f s (%s)", path, seconds, short(fp))
        return Outcome(scene_id or GLOBAL, stage_plan.key, Status.RAN, seconds, fp)


def _recomputed_inputs(group: StageGroup, read: dict[str, StageGroup]) -> list[str]:
    """Input groups whose current version is not the one ``group`` read. A group published
    before versions were recorded counts as stale when an input was written after it."""
    recorded = group.attrs.get("input_versions")
    if recorded is None:
        made = group.attrs.get("written_at", "")
        return sorted(p for p, g in read.items() if g.attrs.get("written_at", "") > made)
    return sorted(p for p, v in recorded.items() if p in read and read[p].version != v)
