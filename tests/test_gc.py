"""gc that cannot surprise: it refuses (deleting nothing) when the plans may not be what
made the store, never follows a link, and removes nothing outside the store."""

import os
import socket

import pytest
import yaml
from conftest import toy_plan_dict
from test_runner import make_plan
from typer.testing import CliRunner

from ovlift.cache_schema import Store, StoreFormatError
from ovlift.pipeline.cli import app
from ovlift.pipeline.gc import GcRefused, collect
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner


def all_versions(store: Store) -> dict[str, list[str]]:
    return {p: store.versions(p) for s in store.scene_ids() for p in store.stage_groups(s)}


def test_a_missing_model_folder_refuses_and_leaves_every_group(tmp_path):
    from tiny_models import clip_folder

    folder = clip_folder(tmp_path / "models" / "clip")
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=2, image_height=48, image_width=64)
    data["stages"]["extract2d"] = {
        "mc": {"implementation": "maskclip", "clip_path": str(folder), "feature_height": 12, "feature_width": 16}
    }
    Runner(plan_from_dict(data)).run(fail_fast=True)
    store = Store(tmp_path / "s.zarr")
    before = all_versions(store)
    folder.rename(tmp_path / "unmounted")
    with pytest.raises(GcRefused, match="inputs missing.*model:"):
        collect([plan_from_dict(data)])
    assert all_versions(store) == before


def test_scenes_the_dataset_no_longer_holds_refuse(tmp_path):
    Runner(make_plan(tmp_path / "s.zarr", toy={"num_scenes": 3})).run(fail_fast=True)
    store = Store(tmp_path / "s.zarr")
    before = all_versions(store)
    with pytest.raises(GcRefused, match="scenes the plans' datasets do not: toy_0002"):
        collect([make_plan(tmp_path / "s.zarr", toy={"num_scenes": 2})])
    assert all_versions(store) == before


def test_a_run_made_with_set_refuses_without_the_same_set(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(toy_plan_dict(tmp_path / "s.zarr", num_scenes=1)))
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(path), "--set", "dataset.num_frames=3"]).exit_code == 0
    refused = cli.invoke(app, ["gc", "--yes", str(path)])
    assert refused.exit_code == 2 and "--set" in refused.output and "nothing deleted" in refused.output
    assert len(Store(tmp_path / "s.zarr").versions("scenes/toy_0000/input")) == 1
    same = cli.invoke(app, ["gc", "--yes", str(path), "--set", "dataset.num_frames=3"])
    assert same.exit_code == 0 and "0 entries" in same.output


def test_a_live_writers_staging_refuses(tmp_path):
    plan = make_plan(tmp_path / "s.zarr")
    Runner(plan).run(fail_fast=True)
    live = Store(plan.store).local_root / "_staging" / f"{socket.gethostname()}-{os.getpid()}-abc"
    live.mkdir(parents=True)
    with pytest.raises(GcRefused, match="staging entries exist"):
        collect([plan])
    live.rmdir()
    assert collect([plan])[0].removed == []


def test_only_superseded_versions_go_after_a_real_plan_change(tmp_path):
    store_path = tmp_path / "s.zarr"
    Runner(make_plan(store_path)).run(fail_fast=True)
    store = Store(store_path)
    old = {p: store.read(p).version for p in ("scenes/toy_0000/height", "scenes/toy_0000/input")}
    Runner(make_plan(store_path, offset=1.0)).run(fail_fast=True)
    removed = collect([make_plan(store_path, offset=1.0)])[0].removed
    versions = sorted(r.rsplit("/", 1)[0] for r in removed if "/refs/" not in r)
    assert versions == [f"scenes/toy_000{i}/{s}" for i in range(2) for s in ("height", "histogram")]
    assert store.versions("scenes/toy_0000/input") == [old["scenes/toy_0000/input"]]  # upstream untouched
    assert old["scenes/toy_0000/height"] not in store.versions("scenes/toy_0000/height")


def test_gc_never_follows_a_link_out_of_the_store(tmp_path):
    plan = make_plan(tmp_path / "s.zarr")
    Runner(plan).run(fail_fast=True)
    store = Store(plan.store)
    outside = tmp_path / "outside"
    (outside / "refs").mkdir(parents=True)
    (outside / "precious.txt").write_text("keep me")
    (store.local_root / "scenes" / "linked").symlink_to(outside)  # a scene that is a link
    version = store.local_root / "scenes" / "toy_0000" / "height" / "0123456789ab-linked"
    version.symlink_to(outside)  # a version that is a link
    assert store.gc({}, dry_run=False)  # removes every real group
    assert (outside / "precious.txt").read_text() == "keep me" and (outside / "refs").is_dir()
    with pytest.raises(StoreFormatError, match="not inside the store"):
        store._remove("scenes/linked/precious.txt")


def test_gc_on_the_command_line_with_a_linked_version_neither_fails_nor_follows_it(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(toy_plan_dict(tmp_path / "s.zarr", num_scenes=1)))
    assert CliRunner().invoke(app, ["run", str(path)]).exit_code == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (tmp_path / "s.zarr" / "scenes" / "toy_0000" / "input" / "0123456789ab-linked").symlink_to(outside)
    result = CliRunner().invoke(app, ["gc", "--yes", str(path)])
    assert result.exit_code == 0, result.output
    assert (outside / "precious.txt").read_text() == "keep me"


def test_scenes_not_run_yet_do_not_refuse(tmp_path):
    """gc deletes nothing where nothing was written: a plan run on some of its scenes collects."""
    plan = make_plan(tmp_path / "s.zarr", toy={"num_scenes": 3})
    Runner(plan).run(scenes=["toy_0000"], fail_fast=True)
    assert collect([plan])[0].removed == []
