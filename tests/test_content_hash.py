"""Fingerprints follow file contents: same-sized replacements of model weights, imported
features or images rerun what they feed, and unchanged files are not read again."""

import hashlib
import os

import numpy as np
import pytest
from conftest import toy_plan_dict
from tiny_models import clip_folder

from ovlift import content_hash
from ovlift.cache_schema import Store
from ovlift.content_hash import file_digests, folder_digest
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.pipeline.status import store_status


def test_file_digests_are_blake2b_of_the_bytes_and_remembered(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([0, 1, 1000, 3 * 2**20 + 7]):  # empty, tiny, and across read chunks
        paths.append(tmp_path / f"f{i}.bin")
        paths[-1].write_bytes(rng.bytes(size))
    reference = [hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest() for p in paths]
    assert file_digests(paths) == reference
    monkeypatch.setattr(content_hash, "_hash_file", lambda path: pytest.fail(f"{path} was read again"))
    assert file_digests(paths) == reference


def test_a_same_sized_rewrite_with_its_mtime_restored_is_noticed(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 100)
    before = file_digests([path])[0]
    st = path.stat()
    path.write_bytes(b"b" * 100)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` or an unpacked tar would
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert file_digests([path])[0] != before == hashlib.blake2b(b"a" * 100, digest_size=16).hexdigest()


def test_an_unusable_cache_still_gives_right_digests(tmp_path, monkeypatch):
    monkeypatch.setenv("OVLIFT_HASH_CACHE", str(tmp_path))  # a folder, not a database
    path = tmp_path / "x.bin"
    path.write_bytes(b"xyz")
    assert file_digests([path]) == [hashlib.blake2b(b"xyz", digest_size=16).hexdigest()]


def test_folder_digest_follows_names_and_contents(tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"1234")
    first = folder_digest(tmp_path / "m")
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"1235")
    second = folder_digest(tmp_path / "m")
    (tmp_path / "m" / "sub" / "w.bin").rename(tmp_path / "m" / "w.bin")
    assert len({first, second, folder_digest(tmp_path / "m")}) == 3


def test_a_same_sized_model_file_reruns_extract2d_and_status_names_it(tmp_path):
    clip = clip_folder(tmp_path / "clip")
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=2, image_height=48, image_width=64)
    teacher = {"implementation": "maskclip", "clip_path": str(clip), "feature_height": 12, "feature_width": 16}
    data["stages"].update({"extract2d": {"t": teacher}, "project": {"cut_bound": 1}})
    assert Runner(plan_from_dict(data)).run(fail_fast=True).counts() == {"ran": 3}
    weights = clip / "model.safetensors"
    size = weights.stat().st_size
    clip_folder(clip, seed=1)  # retrained: same shapes, other values
    assert weights.stat().st_size == size
    plan = plan_from_dict(data)
    stale = {s.path: s.reason for s in store_status(Store(plan.store), plan) if s.state == "stale"}
    assert "model:clip_path/model.safetensors" in stale["scenes/toy_0000/extract2d/t"]
    assert "scenes/toy_0000/extract2d/t" in stale["scenes/toy_0000/project"]
    assert Runner(plan).run(fail_fast=True).counts() == {"cached": 1, "ran": 2}
