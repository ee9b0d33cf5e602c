"""Caching: unchanged plans recompute nothing; a change reruns exactly what it affects."""

import errno

import numpy as np
import pytest
import yaml
from conftest import toy_plan_dict
from typer.testing import CliRunner

from ovlift.cache_schema import ArraySpec, GroupSpec, Store
from ovlift.cache_schema.integrity import MANIFEST_SUFFIX
from ovlift.config import FrozenConfig
from ovlift.pipeline.cli import app
from ovlift.pipeline.gc import collect
from ovlift.pipeline.plan import Plan, StagePlan, plan_from_dict
from ovlift.pipeline.runner import Runner, StaleUpstream
from ovlift.pipeline.status import store_status
from ovlift.stages.base import Stage


class HeightConfig(FrozenConfig):
    offset_m: float = 0.0


class HeightStage(Stage[HeightConfig]):
    """A small downstream stage: point heights above the floor (+ an offset)."""

    implementation = "test"
    version = "1"
    reads = ("input",)
    spec = GroupSpec("height", "test", (ArraySpec("height", "float32", ("N",), (None,), "metres"),))

    def run(self, ctx, out):
        z = ctx.inputs["input"].load("points")[:, 2]
        out.write("height", (z - z.min() + self.config.offset_m).astype(np.float32))


class HistogramStage(Stage[HeightConfig]):
    """Reads ``height``: a stage two levels downstream of ``input``."""

    implementation = "test"
    version = "1"
    reads = ("height",)
    spec = GroupSpec("histogram", "test", (ArraySpec("counts", "int64", (10,), (None,), "points per bin"),))

    def run(self, ctx, out):
        out.write("counts", np.histogram(ctx.inputs["height"].load("height"), bins=10)[0].astype(np.int64))


def make_plan(store, toy=None, offset=0.0, hist_offset=0.0):
    base = plan_from_dict(toy_plan_dict(store, **(toy or {})))
    stages = dict(base.stages)
    stages["height"] = StagePlan("height", HeightStage(HeightConfig(offset_m=offset)))
    stages["histogram"] = StagePlan("histogram", HistogramStage(HeightConfig(offset_m=hist_offset)))
    return Plan(base.store, base.dataset, base.vocabulary, "cpu", stages)


def statuses(report):
    return {(o.scene_id, o.stage): o.status for o in report.outcomes}


def by_stage(report):
    out = {}
    for o in report.outcomes:
        out.setdefault(o.stage, set()).add(o.status)
    return out


def test_rerun_of_an_unchanged_plan_is_all_cache_hits(tmp_path):
    """(Its speed is a benchmark line: benchmarks/cached_rerun.py.)"""
    plan = make_plan(tmp_path / "s.zarr", toy={"num_scenes": 4})
    assert Runner(plan).run().counts() == {"ran": 12}
    assert Runner(plan).run().counts() == {"cached": 12}


def test_switching_a_config_back_is_a_cache_hit_and_gc_keeps_what_plans_use(tmp_path):
    store = tmp_path / "s.zarr"
    Runner(make_plan(store)).run()
    Runner(make_plan(store, offset=1.0)).run()
    assert Runner(make_plan(store)).run().counts() == {"cached": 6}  # back: both versions are still there
    s = Store(store)
    assert s.read("scenes/toy_0000/height").attrs["config"]["offset_m"] == 0.0  # downstream reads this one
    assert len(s.versions("scenes/toy_0000/height")) == 2
    assert collect([make_plan(store), make_plan(store, offset=1.0)], dry_run=False)[0].removed == []
    result = collect([make_plan(store)])[0]
    versions = [r for r in result.removed if "/refs/" not in r]
    assert sorted(r.rsplit("/", 1)[0] for r in versions) == [
        f"scenes/toy_000{i}/{stage}" for i in range(2) for stage in ("height", "histogram")
    ]
    assert not any((s.local_root / f"{v}{MANIFEST_SUFFIX}").exists() for v in versions)  # manifests go too
    assert result.bytes_freed > 0
    assert Runner(make_plan(store)).run().counts() == {"cached": 6}
    assert Runner(make_plan(store, offset=1.0)).run().counts() == {"cached": 2, "ran": 4}  # gone: recomputed


def test_config_change_reruns_that_stage_and_downstream_not_upstream(tmp_path):
    store = tmp_path / "s.zarr"
    Runner(make_plan(store)).run()
    report = Runner(make_plan(store, offset=1.0)).run()
    assert by_stage(report) == {"input": {"cached"}, "height": {"ran"}, "histogram": {"ran"}}
    report = Runner(make_plan(store, offset=1.0, hist_offset=2.0)).run()
    assert by_stage(report) == {"input": {"cached"}, "height": {"cached"}, "histogram": {"ran"}}
    # an upstream change (the dataset's config) reruns everything below it
    report = Runner(make_plan(store, toy={"seed": 5}, offset=1.0, hist_offset=2.0)).run()
    assert by_stage(report) == {"input": {"ran"}, "height": {"ran"}, "histogram": {"ran"}}
    # and going back to a previous config is a hit: its versions stay until gc
    report = Runner(make_plan(store, offset=1.0, hist_offset=2.0)).run()
    assert by_stage(report) == {"input": {"cached"}, "height": {"cached"}, "histogram": {"cached"}}


def test_a_moved_model_folder_keeps_its_results_and_a_changed_one_reruns(tmp_path):
    """Fingerprints hash a model's files, not where they lie: a clone elsewhere, or the
    folder moved, is all cache hits; one changed weight file reruns the teacher."""
    from tiny_models import clip_folder

    def plan(folder):
        data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=2, image_height=48, image_width=64)
        teacher = {"implementation": "maskclip", "clip_path": str(folder), "feature_height": 12, "feature_width": 16}
        data["stages"]["extract2d"] = {"mc": teacher}
        return plan_from_dict(data)

    first = clip_folder(tmp_path / "a" / "clip")
    Runner(plan(first)).run(fail_fast=True)
    moved = first.rename(tmp_path / "elsewhere")
    assert by_stage(Runner(plan(moved)).run(fail_fast=True)) == {"input": {"cached"}, "extract2d/mc": {"cached"}}
    clip_folder(moved, seed=1)  # same files, other weights
    assert by_stage(Runner(plan(moved)).run(fail_fast=True)) == {"input": {"cached"}, "extract2d/mc": {"ran"}}


def test_force_reruns_the_stage_and_what_reads_it(tmp_path):
    plan = make_plan(tmp_path / "s.zarr")
    Runner(plan).run()
    report = Runner(plan).run(force=["height"])
    assert by_stage(report) == {"input": {"cached"}, "height": {"ran"}, "histogram": {"ran"}}


def test_selected_stages_bring_what_they_read_up_to_date_first(tmp_path):
    store = tmp_path / "s.zarr"
    report = Runner(make_plan(store)).run(stages=["height"])  # input is missing: it runs first
    assert by_stage(report) == {"input": {"ran"}, "height": {"ran"}}
    Runner(make_plan(store)).run()
    report = Runner(make_plan(store, offset=1.0)).run(stages=["histogram"])  # height is stale now
    assert by_stage(report) == {"input": {"cached"}, "height": {"ran"}, "histogram": {"ran"}}


def test_no_upstream_stops_on_a_stale_or_missing_input_naming_it(tmp_path):
    store = tmp_path / "s.zarr"
    with pytest.raises(StaleUpstream, match=r"scenes/toy_0000/input: missing"):
        Runner(make_plan(store)).run(stages=["height"], upstream=False)
    Runner(make_plan(store)).run()
    with pytest.raises(StaleUpstream) as err:
        Runner(make_plan(store, offset=1.0)).run(stages=["histogram"], upstream=False)
    message = str(err.value)
    assert "scenes/toy_0000/height: stale (its config or version changed)" in message
    assert "scenes/toy_0001/height: stale" in message and "input" not in message.split(":\n", 1)[1]
    assert Store(store).read("scenes/toy_0000/histogram") is not None  # nothing ran, nothing replaced
    report = Runner(make_plan(store)).run(stages=["histogram"], upstream=False)
    assert by_stage(report) == {"histogram": {"cached"}}


def test_a_failing_scene_skips_its_downstream_and_spares_other_scenes(tmp_path, monkeypatch):
    plan = make_plan(tmp_path / "s.zarr")
    original = plan.dataset.load

    def load(scene_id):
        source = original(scene_id)
        if scene_id == "toy_0001":
            source.points[0] = np.nan
        return source

    monkeypatch.setattr(plan.dataset, "load", load)
    report = Runner(plan).run()
    assert statuses(report) == {
        ("toy_0000", "input"): "ran",
        ("toy_0000", "height"): "ran",
        ("toy_0000", "histogram"): "ran",
        ("toy_0001", "input"): "failed",
        ("toy_0001", "height"): "skipped",
        ("toy_0001", "histogram"): "skipped",
    }


def test_status_reports_cached_stale_and_missing(tmp_path):
    store = tmp_path / "s.zarr"
    Runner(make_plan(store)).run()
    changed = make_plan(store, offset=3.0)
    states = {(s.scene_id, s.path.rsplit("/", 1)[1]): s.state for s in store_status(Runner(changed).store, changed)}
    assert states[("toy_0000", "input")] == "cached"
    assert states[("toy_0000", "height")] == "stale" and states[("toy_0000", "histogram")] == "stale"
    # from the store alone: rerunning 'height' makes the recorded histogram stale
    Runner(changed).run(stages=["input", "height"])
    alone = {(s.scene_id, s.path.rsplit("/", 1)[1]): (s.state, s.reason) for s in store_status(Runner(changed).store)}
    assert alone[("toy_0000", "height")] == ("cached", "")
    assert alone[("toy_0000", "histogram")][0] == "stale"
    assert "scenes/toy_0000/height changed" in alone[("toy_0000", "histogram")][1]
    more = make_plan(store, toy={"num_scenes": 3})
    missing = [s for s in store_status(Runner(more).store, more) if s.scene_id == "toy_0002"]
    assert {s.state for s in missing} == {"missing"}


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda p: p["stages"]["input"].update(max_median_depth_m="far"),
            r"stages\.input: max_median_depth_m: Input should be a valid number",
        ),
        (
            lambda p: p["dataset"].update(num_scenes=0),
            r"dataset: num_scenes: Input should be greater than or equal to 1",
        ),
        (lambda p: p["dataset"].update(color="red"), r"dataset: color: Extra inputs are not permitted"),
        (lambda p: p["stages"].update(nonsense={}), r"stages: unknown stages \['nonsense'\]"),
        (lambda p: p["dataset"].update(name="scannet9"), r"dataset: unknown dataset 'scannet9'"),
        (lambda p: p.pop("store"), r"store: Field required"),
    ],
)
def test_bad_plans_fail_with_the_file_and_key(tmp_path, edit, message):
    data = toy_plan_dict(tmp_path / "s.zarr")
    edit(data)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert str(path) in result.output.replace("\n", ""), result.output  # the console breaks a long path
    import re

    assert re.search(message, result.output.replace("\n", " ")), result.output


def test_cli_ingest_run_status(tmp_path):
    data = toy_plan_dict(tmp_path / "s.zarr")
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    cli = CliRunner()
    result = cli.invoke(app, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 ran" in result.output
    result = cli.invoke(app, ["run", str(path), "--scenes", "toy_0001"])
    assert result.exit_code == 0 and "1 cached" in result.output
    result = cli.invoke(app, ["status", "--store", str(tmp_path / "s.zarr"), "--json"])
    rows = [yaml.safe_load(line) for line in result.output.splitlines()]
    assert [(r["scene_id"], r["state"]) for r in rows] == [("toy_0000", "cached"), ("toy_0001", "cached")]
    result = cli.invoke(app, ["run", str(path), "--scenes", "toy_0009"])
    assert result.exit_code == 2 and "toy_0009" in result.output


def test_gc_on_the_command_line_is_a_dry_run_without_yes_and_reports_bytes_freed(tmp_path):
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1)
    for name, frames in (("a", 4), ("b", 3)):
        data["dataset"]["num_frames"] = frames
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
        assert CliRunner().invoke(app, ["run", str(tmp_path / f"{name}.yaml")]).exit_code == 0
    dry = CliRunner().invoke(app, ["gc", str(tmp_path / "a.yaml")])
    assert dry.exit_code == 0 and "would remove scenes/toy_0000/input/" in dry.output and "--yes" in dry.output
    assert " MiB)" in dry.output  # each entry with its size
    assert len(Store(tmp_path / "s.zarr").versions("scenes/toy_0000/input")) == 2
    done = CliRunner().invoke(app, ["gc", "--yes", str(tmp_path / "a.yaml")])
    assert done.exit_code == 0, done.output
    assert "removed scenes/toy_0000/input/" in done.output and "2 entries, freed" in done.output
    assert len(Store(tmp_path / "s.zarr").versions("scenes/toy_0000/input")) == 1


class Flaky:
    """``HeightStage.run`` that first raises the given errors (after a partial write), then runs."""

    def __init__(self, run, *errors):
        self.run, self.errors, self.calls = run, list(errors), 0

    def __call__(self, stage, ctx, out):
        self.calls += 1
        if self.errors:
            out.write("height", np.zeros(3, np.float32))  # half-written, then the error
            raise self.errors.pop(0)
        self.run(stage, ctx, out)


def test_transient_io_errors_retry_with_backoff_and_bad_input_fails_at_once(tmp_path, monkeypatch):
    import ovlift.pipeline.runner as runner_module
    from ovlift.pipeline.runner import is_transient

    class ConnectionError(Exception):  # botocore's base of its connection errors, matched by name
        pass

    class EndpointConnectionError(ConnectionError):
        pass

    slept = []
    monkeypatch.setattr(runner_module.time, "sleep", slept.append)
    flaky = Flaky(HeightStage.run, ConnectionResetError("connection reset by peer"), EndpointConnectionError("s3"))
    monkeypatch.setattr(HeightStage, "run", lambda self, ctx, out: flaky(self, ctx, out))
    plan = make_plan(tmp_path / "s.zarr", toy={"num_scenes": 1})
    report = Runner(plan).run(stages=["height"])
    assert statuses(report)[("toy_0000", "height")] == "ran" and flaky.calls == 3
    assert slept == [2.0, 4.0]  # backoff doubles
    z = Store(plan.store).read("scenes/toy_0000/height").load("height")
    assert z.shape[0] > 3  # the published group is the good attempt's, not a half-written one

    slept.clear()
    flaky.errors, flaky.calls = [ValueError("scene 'toy_0000': array 'points' is empty")], 0
    report = Runner(plan).run(stages=["height"], force=["height"])
    assert statuses(report)[("toy_0000", "height")] == "failed" and flaky.calls == 1 and slept == []

    flaky.errors, flaky.calls = [TimeoutError("read timed out")] * 4, 0
    report = Runner(plan).run(stages=["height"], force=["height"])
    assert statuses(report)[("toy_0000", "height")] == "failed" and flaky.calls == 4 and slept == [2.0, 4.0, 8.0]
    assert is_transient(RuntimeError("wrapped")) is False
    try:
        try:
            raise ConnectionRefusedError("refused")
        except OSError as err:
            raise RuntimeError("stage failed") from err
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(FileNotFoundError("no such file"))
    assert is_transient(OSError(errno.EBUSY, "SlowDown")) and not is_transient(OSError(errno.EACCES, "denied"))
