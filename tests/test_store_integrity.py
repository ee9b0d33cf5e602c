"""A store that notices its own damage: every chunk checksummed, a manifest per version,
``ovlift verify`` naming what is damaged, ``--repair`` recomputing exactly that and what
read it, and ``--force`` rerunning only the groups that read a rerun group."""

import json
import shutil

import numpy as np
import pytest
from conftest import toy_plan_dict
from test_runner import by_stage, make_plan
from typer.testing import CliRunner

from ovlift.cache_schema import Store, iter_arrays
from ovlift.cache_schema.integrity import GROUP_METADATA, MANIFEST_SUFFIX, chunk_key
from ovlift.pipeline.cli import app
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.pipeline.status import State, store_status
from ovlift.pipeline.verify import verify


def flip(path, at=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x01
    path.write_bytes(bytes(data))


def head_folder(store: Store, path: str):
    return store.local_root / path / store.head(path)["version"]


def found(report):
    return {(d.path, d.array, d.chunk) for d in report.damage}


@pytest.fixture
def ran(tmp_path):
    plan = make_plan(tmp_path / "s.zarr")
    Runner(plan).run(fail_fast=True)
    return plan, Store(plan.store)


def test_a_flipped_byte_in_any_array_or_metadata_is_found_and_named(ran):
    _, store = ran
    assert verify(store).damage == []
    cases = 0
    for path in store.stage_groups("toy_0001"):
        folder = head_folder(store, path)
        group = store.read(path).group
        files = [(f"{name}/zarr.json", name, "zarr.json") for name, _ in iter_arrays(group)]
        files += [(f"{name}/{chunk_key(a, (0,) * a.ndim)}", name, None) for name, a in iter_arrays(group)]
        files.append(("zarr.json", GROUP_METADATA, "zarr.json"))
        for rel, array, chunk in files:
            target = folder / rel
            if not target.exists():  # a chunk equal to the fill value is not stored
                continue
            original = target.read_bytes()
            flip(target)
            report = verify(store, scenes=["toy_0001"])
            target.write_bytes(original)
            expected_chunk = chunk or rel[len(array) + 1 :]
            assert found(report) == {(path, array, expected_chunk)}, rel
            cases += 1
    assert cases > 20
    assert verify(store).damage == []


def test_a_missing_chunk_a_stray_file_and_a_damaged_manifest_are_found(ran):
    _, store = ran
    folder = head_folder(store, "scenes/toy_0000/height")
    (folder / "height" / "c" / "0").unlink()  # Zarr alone would read zeros
    assert found(verify(store)) == {("scenes/toy_0000/height", "height", "c/0")}
    shutil.rmtree(folder.parent)
    Runner(make_plan(store.local_root)).run(fail_fast=True)
    folder = head_folder(store, "scenes/toy_0000/height")
    (folder / "height" / "c" / "9").write_bytes(b"x")
    assert {d.problem for d in verify(store).damage} == {"not in the manifest (written after publishing)"}
    (folder / "height" / "c" / "9").unlink()
    manifest = folder.parent / f"{folder.name}{MANIFEST_SUFFIX}"
    flip(manifest, at=5)
    assert found(verify(store)) == {("scenes/toy_0000/height", GROUP_METADATA, manifest.name)}


def test_versions_without_a_manifest_still_have_their_chunks_decoded(ran):
    """Stores published before checksums: no manifest, no digest; each chunk's own CRC stays."""
    _, store = ran
    path = "scenes/toy_0000/height"
    folder = head_folder(store, path)
    (folder.parent / f"{folder.name}{MANIFEST_SUFFIX}").unlink()
    for ref in (folder.parent / "refs").iterdir():
        if not ref.name.startswith("."):
            ref.write_text(json.dumps({k: v for k, v in json.loads(ref.read_text()).items() if k != "digest"}))
    report = verify(store)
    assert report.damage == [] and report.unchecked == [f"{path}/{folder.name}"]
    flip(folder / "height" / "c" / "0")
    (damage,) = verify(store).damage
    assert (damage.array, damage.chunk) == ("height", "c/0") and "checksum" in damage.problem


def test_a_stage_reading_a_damaged_chunk_fails_naming_it_and_publishes_nothing(ran):
    plan, store = ran
    flip(head_folder(store, "scenes/toy_0000/height") / "height" / "c" / "0")
    before = store.versions("scenes/toy_0000/histogram")
    report = Runner(plan).run(force=["histogram"])
    (failed,) = report.failed
    assert (failed.scene_id, failed.stage) == ("toy_0000", "histogram")
    for words in ("'scenes/toy_0000/height'", "array 'height'", "chunk 'c/0'", "ovlift verify", "--repair"):
        assert words in failed.error
    assert store.versions("scenes/toy_0000/histogram") == before and store.leftovers() == []
    assert by_stage(report)["histogram"] == {"ran", "failed"}  # the other scene's is fine


def test_repair_then_run_recomputes_exactly_the_damaged_group_and_what_read_it(ran):
    plan, store = ran
    outputs = {
        p: store.read(p).load(n)
        for p, n in [("scenes/toy_0001/height", "height"), ("scenes/toy_0001/histogram", "counts")]
    }
    damaged = head_folder(store, "scenes/toy_0001/height")
    flip(damaged / "height" / "c" / "0")
    assert Runner(plan).run().counts() == {"cached": 6}  # unmarked damage is not looked for on a hit
    report = verify(store, repair=True)
    assert report.damaged_versions == [f"scenes/toy_0001/height/{damaged.name}"]
    assert (store.local_root / "_damaged/scenes/toy_0001/height" / damaged.name).is_dir() and not damaged.exists()
    rows = {r.path: r for r in store_status(store, plan)}
    assert rows["scenes/toy_0001/height"].state is State.INCOMPLETE
    assert "verify --repair" in rows["scenes/toy_0001/height"].reason
    rerun = Runner(plan).run(fail_fast=True)
    ran_now = {(o.scene_id, o.stage) for o in rerun.outcomes if o.status == "ran"}
    assert ran_now == {("toy_0001", "height"), ("toy_0001", "histogram")}
    for path, name in [("scenes/toy_0001/height", "height"), ("scenes/toy_0001/histogram", "counts")]:
        np.testing.assert_array_equal(store.read(path).load(name), outputs[path])
    assert verify(store).damage == [] and Runner(plan).run().counts() == {"cached": 6}


def test_verify_on_the_command_line_prints_json_lines_and_exits_1_on_damage(ran):
    _, store = ran
    cli = CliRunner()
    clean = cli.invoke(app, ["verify", str(store.local_root)])
    assert clean.exit_code == 0 and "0 damaged" in clean.output
    flip(head_folder(store, "scenes/toy_0000/input") / "points" / "c" / "0" / "0")
    result = cli.invoke(app, ["verify", str(store.local_root), "--json", "--stages", "input"])
    assert result.exit_code == 1, result.output
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert (line["path"], line["array"], line["chunk"]) == ("scenes/toy_0000/input", "points", "c/0/0")
    assert "verify" in result.output and "--repair" in result.output
    assert cli.invoke(app, ["verify", str(store.local_root), "--scenes", "nope"]).exit_code == 2


def cus3d_plan(tmp_path):
    data = toy_plan_dict(
        tmp_path / "c.zarr", num_scenes=3, num_frames=4, image_height=48, image_width=64, vertex_spacing_m=0.1
    )
    data["splits"] = {"train": ["toy_0000"], "val": ["toy_0001"], "test": ["toy_0002"]}
    synthetic = {"implementation": "synthetic", "feature_height": 24, "feature_width": 32, "noise_std": 0.2}
    from conftest import TINY_STUDENT

    data["stages"].update(
        extract2d={"t": synthetic},
        project={"cut_bound": 1},
        segment={},
        objects={},
        denoise={},
        distill={"source": "denoise", "student": TINY_STUDENT, "epochs": 1, "batch_size": 1, "val_split": "val"},
        predict={},
        evaluate={"split": "test"},
    )
    return plan_from_dict(data)


def test_force_on_a_held_out_scene_reruns_that_scene_and_what_reads_it_not_distill(tmp_path):
    """(Forcing a val room's denoise does rerun distill: early stopping read it.)"""
    plan = cus3d_plan(tmp_path)
    Runner(plan).run(fail_fast=True)
    report = Runner(plan).run(scenes=["toy_0002"], force=["denoise"], fail_fast=True)
    ran_now = {(o.scene_id, o.stage) for o in report.outcomes if o.status == "ran"}
    assert ran_now == {("toy_0002", "denoise"), ("toy_0002", "predict"), ("global", "evaluate")}
    assert ("global", "distill") in {(o.scene_id, o.stage) for o in report.outcomes}  # looked at, cached
    # a val room's denoise is what early stopping read: distill retrains, from scratch
    report = Runner(plan).run(scenes=["toy_0001"], force=["denoise"], fail_fast=True)
    assert ("global", "distill") in {(o.scene_id, o.stage) for o in report.outcomes if o.status == "ran"}
    files = Store(plan.store).files_root / "global" / "distill"
    assert any(".before-force-" in p.name for p in files.iterdir())  # not resumed from the last run's checkpoints


def test_a_damaged_group_metadata_is_found_and_recomputed_not_a_crash(ran):
    plan, store = ran
    meta = head_folder(store, "scenes/toy_0000/height") / "zarr.json"
    meta.write_text(meta.read_text().replace('"node_type"', '"node_typd"'))  # valid JSON, not a group
    assert found(verify(store)) == {("scenes/toy_0000/height", GROUP_METADATA, "zarr.json")}
    report = Runner(plan).run(fail_fast=True)
    assert {(o.scene_id, o.stage) for o in report.outcomes if o.status == "ran"} == {
        ("toy_0000", "height"),
        ("toy_0000", "histogram"),
    }


def test_groups_published_before_versions_were_recorded_rerun_when_an_input_is_newer(ran):
    import time

    import zarr

    plan, store = ran
    for scene in ("toy_0000", "toy_0001"):
        attrs = zarr.open_group(str(head_folder(store, f"scenes/{scene}/histogram")), mode="r+").attrs
        attrs.put({k: v for k, v in attrs.asdict().items() if k != "input_versions"})
    time.sleep(1.1)  # written_at has whole seconds
    report = Runner(plan).run(scenes=["toy_0000"], force=["height"], fail_fast=True)
    assert {(o.scene_id, o.stage) for o in report.outcomes if o.status == "ran"} == {
        ("toy_0000", "height"),
        ("toy_0000", "histogram"),
    }
