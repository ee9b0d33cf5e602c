"""Stores on S3: a local S3-compatible server (moto, on the loopback) reached through s3fs,
the same code path as a real bucket (only the endpoint differs)."""

import logging
import os
import signal
import subprocess
import sys

import pytest
import yaml
from conftest import tiny_pipeline_plan, toy_plan_dict
from test_crash_safety import assert_accepted_groups_are_whole, snapshot

from ovlift.cache_schema import Store
from ovlift.cache_schema.files import read_text
from ovlift.pipeline.gc import collect
from ovlift.pipeline.plan import load_plan
from ovlift.pipeline.runner import Runner

BUCKET = "ovlift-test"

KILL_IN_PUBLISH = """
import os, signal, s3fs
moves = {{"n": 0}}
real_mv = s3fs.S3FileSystem.mv
def mv(self, src, dst, *args, **kwargs):
    moves["n"] += 1
    if moves["n"] == {kill_at}:  # a version half moved in ({kill_at} == 1: before any key)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_mv(self, src, dst, *args, **kwargs)
s3fs.S3FileSystem.mv = mv
{after_moves}
from ovlift.pipeline.cli import app
app(["run", {plan!r}, "--force", "input", "--scenes", "toy_0000"])
"""
KILL_BEFORE_POINTERS = """
from ovlift.cache_schema import store as store_module
real_pointer = store_module.Store._write_pointer
def pointer(self, key, value):
    if value:  # the version is whole, no pointer names it yet
        os.kill(os.getpid(), signal.SIGKILL)
    real_pointer(self, key, value)
store_module.Store._write_pointer = pointer
"""


@pytest.fixture(scope="module")
def s3():
    """The endpoint of a moto S3 server with an empty bucket; AWS_* variables point s3fs (and
    every subprocess) at it, as they would at a real bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir(BUCKET)
    yield env["AWS_ENDPOINT_URL"]
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def on_s3(plan_path, prefix):
    data = yaml.safe_load(plan_path.read_text())
    data["store"] = f"s3://{BUCKET}/{prefix}/store.zarr"
    plan_path.write_text(yaml.safe_dump(data))
    return plan_path


@pytest.mark.slow
def test_a_whole_plan_runs_on_s3_with_its_files_beside_the_store(s3, tmp_path):
    import s3fs

    path = on_s3(tiny_pipeline_plan(tmp_path / "plan.yaml", epochs=2), "whole")
    first = Runner(load_plan(path)).run()
    assert not first.failed and first.counts() == {"ran": 3 * 4 + 2}
    assert not (tmp_path / "plan.zarr").exists()  # nothing local but the files' mirror
    store = Store(load_plan(path).store)
    report = store.read("global/evaluate").info["report"]
    assert report.startswith(f"s3://{BUCKET}/whole/store.zarr.files/global/evaluate/")
    assert "mIoU" in read_text(report, "metrics.md")
    checkpoints = store.read("global/distill").info["checkpoints"]
    assert any(k.endswith(".pt") for k in s3fs.S3FileSystem().find(checkpoints))
    assert Runner(load_plan(path)).run().counts() == {"cached": 3 * 4 + 2}
    forced = Runner(load_plan(path)).run(stages=["evaluate"], force=["evaluate"])  # its files move aside
    assert forced.counts()["ran"] == 1
    removed = [r for r in collect([load_plan(path)])[0].removed if ".files/" in r]
    assert len(removed) == 1 and removed[0].startswith(f"s3://{BUCKET}/whole/store.zarr.files/global/evaluate/")
    assert ".before-force-" in removed[0] and not s3fs.S3FileSystem().exists(removed[0])
    assert "mIoU" in read_text(store.read("global/evaluate").info["report"], "metrics.md")


def _plan(tmp_path, name):
    data = toy_plan_dict(f"s3://{BUCKET}/{name}/store.zarr", num_scenes=2)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("name", "kill_at", "after_moves"), [("half", 3, ""), ("moved", 0, KILL_BEFORE_POINTERS)])
def test_a_publish_killed_on_s3_never_shows_a_partial_group(s3, tmp_path, name, kill_at, after_moves):
    """SIGKILL halfway through moving a version's keys in, or after the move but before the
    pointers: readers keep the old version, a rerun is a cache hit, gc removes the rest."""
    path = _plan(tmp_path, name)
    Runner(load_plan(path)).run()
    store = Store(load_plan(path).store)
    reference = snapshot(store)
    code = KILL_IN_PUBLISH.format(plan=str(path), kill_at=kill_at, after_moves=after_moves)
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, OVLIFT_PROGRESS="0"), capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    store = Store(load_plan(path).store)
    assert len(store.versions("scenes/toy_0000/input")) == 2  # the killed one, unreferenced
    assert assert_accepted_groups_are_whole(store, reference) == 2
    assert Runner(load_plan(path)).run().counts() == {"cached": 2}
    assert store.leftovers() == []  # the run removed the killed one's staging
    removed = collect([load_plan(path)])[0].removed
    assert [r.rsplit("/", 1)[0] for r in removed] == ["scenes/toy_0000/input"]
    assert assert_accepted_groups_are_whole(store, reference) == 2


def test_verify_finds_and_repairs_a_damaged_chunk_on_s3(s3, tmp_path):
    import s3fs

    from ovlift.pipeline.verify import verify

    plan = load_plan(_plan(tmp_path, "verify"))
    Runner(plan).run(fail_fast=True)
    store = Store(plan.store)
    version = store.head("scenes/toy_0001/input")["version"]
    key = f"{BUCKET}/verify/store.zarr/scenes/toy_0001/input/{version}/points/c/0/0"
    fs = s3fs.S3FileSystem()
    data = bytearray(fs.cat_file(key))
    data[len(data) // 2] ^= 1
    fs.pipe_file(key, bytes(data))
    report = verify(store, repair=True)
    assert {(d.path, d.array, d.chunk) for d in report.damage} == {("scenes/toy_0001/input", "points", "c/0/0")}
    assert fs.exists(f"{BUCKET}/verify/store.zarr/_damaged/scenes/toy_0001/input/{version}/points/c/0/0")
    rerun = Runner(plan).run(fail_fast=True)
    assert {(o.scene_id, o.status) for o in rerun.outcomes} == {("toy_0000", "cached"), ("toy_0001", "ran")}
    assert verify(store).damage == []
