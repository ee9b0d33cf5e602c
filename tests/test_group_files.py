"""A stage's files on an object store go through a local mirror (``group_files``), here on
fsspec's ``memory://`` filesystem, the same code path as s3:// (not a LocalFileSystem)."""

import os
import uuid

import fsspec
import pytest

from ovlift.cache_schema.files import group_files


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """A fresh memory:// prefix (the memory filesystem is one per process) and its path;
    the mirrors go under tmp_path/cache."""
    monkeypatch.setenv("OVLIFT_FILES_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    root = f"/ovlift-test-{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_a_key_that_climbs_out_of_the_prefix_is_refused(bucket, tmp_path):
    """An object key with '..' parts would be downloaded outside the mirror folder: refused,
    naming the key, and nothing is written (not even the plain key beside it)."""
    fs, root = bucket
    fs.pipe(f"{root}/store.zarr.files/g/v/checkpoint.pt", b"ok")
    fs.pipe(f"{root}/store.zarr.files/g/v/../../escaped.txt", b"planted")  # copied as is: tmp_path/escaped.txt
    with pytest.raises(ValueError, match=r"refusing object key '.*/g/v/\.\./\.\./escaped.txt'") as err:
        with group_files(f"memory://{root}/store.zarr.files", "g", "v", force=False):
            pytest.fail("the stage ran")
    assert "without '..' parts" in str(err.value)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []
    assert list((tmp_path / "cache").iterdir()) == []  # the refused mirror is removed


def test_two_runs_of_one_group_get_mirrors_of_their_own(bucket):
    """Two runs of the same group at once (two processes, here two contexts) each write into a
    folder of their own, named by the pid and a random part, both removed once uploaded."""
    fs, root = bucket
    fs.pipe(f"{root}/files/g/v/resume.pt", b"before")
    url = f"memory://{root}/files"
    with group_files(url, "g", "v", force=False) as first, group_files(url, "g", "v", force=False) as second:
        assert first.url == second.url and first.local != second.local
        assert all(f"-{os.getpid()}-" in m.local.name for m in (first, second))
        assert (first.local / "resume.pt").read_bytes() == (second.local / "resume.pt").read_bytes() == b"before"
        (first.local / "a.txt").write_text("a")
        (second.local / "b.txt").write_text("b")
        assert not (second.local / "a.txt").exists()
    assert not first.local.exists() and not second.local.exists()
    assert fs.cat(f"{root}/files/g/v/a.txt") == b"a" and fs.cat(f"{root}/files/g/v/b.txt") == b"b"


def test_checkpoints_are_written_through_a_temporary_name_of_their_own(tmp_path, monkeypatch):
    """Two runs of one group on a shared files folder never write the same temporary file."""
    import torch

    from ovlift.models import training

    written = []
    real_save = torch.save
    monkeypatch.setattr(training.torch, "save", lambda obj, f: (written.append(f), real_save(obj, f)))
    for _ in range(2):
        training.save_atomically({"epoch": 1}, tmp_path / "epoch_0001.pt")
    assert len(set(written)) == 2 and tmp_path / "epoch_0001.tmp" not in written
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_0001.pt"]
