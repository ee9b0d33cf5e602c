"""SIGKILL at any moment never leaves a group the runner accepts half-written."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import yaml
from conftest import toy_plan_dict

from ovlift.cache_schema import Store, iter_arrays
from ovlift.pipeline.gc import collect
from ovlift.pipeline.plan import load_plan
from ovlift.pipeline.runner import Runner

KILL_AT_PUBLISH = """
import os, signal
from ovlift.cache_schema import store as store_module
real_rename = os.rename
def rename(src, dst):
    real_rename(src, dst)
    if "_staging" in str(src):  # the new version is in place, no pointer names it yet
        os.kill(os.getpid(), signal.SIGKILL)
store_module.os.rename = rename
from ovlift.pipeline.cli import app
app(["run", {plan!r}, "--force", "input"])
"""


def write_plan(tmp_path, name):
    data = toy_plan_dict(tmp_path / f"{name}.zarr", num_scenes=3, num_frames=10, image_height=120, image_width=160)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def snapshot(store: Store) -> dict:
    """Every array of every accepted group: what a reader would get."""
    out = {}
    for scene in store.scene_ids():
        for path in store.stage_groups(scene):
            group = store.read(path)
            if group is not None:
                out[path] = (group.fingerprint, {name: a[...] for name, a in iter_arrays(group.group)})
    return out


def assert_accepted_groups_are_whole(store: Store, reference: dict) -> int:
    accepted = snapshot(store)
    for path, (fp, arrays) in accepted.items():
        ref_fp, ref_arrays = reference[path]
        assert fp == ref_fp
        assert arrays.keys() == ref_arrays.keys(), path
        for name in arrays:
            np.testing.assert_array_equal(arrays[name], ref_arrays[name], err_msg=f"{path}/{name}")
    return len(accepted)


def cli(plan_path, *args):
    env = dict(os.environ, OVLIFT_PROGRESS="0")
    return subprocess.Popen(
        [sys.executable, "-m", "ovlift.pipeline.cli", "run", str(plan_path), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_at_random_moments_then_resume(tmp_path):
    ref_plan = write_plan(tmp_path, "reference")
    start = time.perf_counter()
    assert cli(ref_plan).wait() == 0
    full = time.perf_counter() - start
    reference = snapshot(Store(load_plan(ref_plan).store))
    assert len(reference) == 3

    plan_path = write_plan(tmp_path, "killed")
    store = Store(load_plan(plan_path).store)
    rng = random.Random(7)
    killed = 0
    for attempt in range(6):
        # force re-writes so that kills also land while replacing complete groups
        proc = cli(plan_path, *(["--force", "input"] if attempt % 2 else []))
        time.sleep(rng.uniform(0.2, 0.9) * full)
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        assert_accepted_groups_are_whole(store, reference)
    assert killed > 0  # some kills really interrupted a run
    assert cli(plan_path).wait() == 0
    assert assert_accepted_groups_are_whole(store, reference) == 3
    assert store.leftovers() == []  # the resumed run removed the killed runs' staging


def test_sigkill_between_publishing_a_version_and_pointing_to_it_keeps_the_old_one(tmp_path):
    plan_path = write_plan(tmp_path, "publish")
    plan = load_plan(plan_path)
    Runner(plan).run()
    reference = snapshot(Store(plan.store))
    code = KILL_AT_PUBLISH.format(plan=str(plan_path))
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, OVLIFT_PROGRESS="0"), capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    store = Store(plan.store)
    assert len(store.versions("scenes/toy_0000/input")) == 2  # the killed run's version, unreferenced
    assert assert_accepted_groups_are_whole(store, reference) == 3  # readers still get the old one
    assert Runner(load_plan(plan_path)).run().counts() == {"cached": 3}
    removed = collect([load_plan(plan_path)])[0].removed
    assert [r.rsplit("/", 1)[0] for r in removed] == ["scenes/toy_0000/input"]
    assert len(store.versions("scenes/toy_0000/input")) == 1
    assert assert_accepted_groups_are_whole(store, reference) == 3


def test_two_runs_of_the_same_plan_at_once(tmp_path):
    plan_path = write_plan(tmp_path, "twice")
    procs = [cli(plan_path, "--force", "input") for _ in range(2)]
    assert [p.wait() for p in procs] == [0, 0]
    ref_plan = write_plan(tmp_path, "reference")
    assert cli(ref_plan).wait() == 0
    store = Store(load_plan(plan_path).store)
    assert assert_accepted_groups_are_whole(store, snapshot(Store(load_plan(ref_plan).store))) == 3
    assert store.leftovers() == []
