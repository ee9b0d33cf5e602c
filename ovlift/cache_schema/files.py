"""Plain files of a group version (checkpoints, training logs, reports, plots).

They live beside the store, under the same kind of URL, so that every machine of a
cluster finds them where the store is: ``<store>.files/<group path>/<fp12>/`` - a
folder for a local store, a prefix for an object store (``s3://b/run/store.zarr`` ->
``s3://b/run/store.zarr.files/...``).

Stages write files with ordinary file APIs (``torch.save``, matplotlib), so on an
object store a stage writes into a local mirror of its prefix (under
``OVLIFT_FILES_CACHE``, default ``~/.cache/ovlift/files``): what the prefix holds is
downloaded first (a checkpoint to resume from) and the mirror is uploaded when the
stage ends, also when it fails (so a rerun resumes from its last checkpoint). A
checkpoint written during training reaches the object store only then: after a
kill, the next run of the group on the same machine uploads the killed run's mirror
first (so it resumes from its checkpoints); on another machine it starts from what
the prefix holds.

Each run of a stage has a mirror of its own, ``<sha256(url)[:16]>-<pid>-<random>``
(created by ``mkdtemp``: owner-only, never an existing folder), removed once it is
uploaded: two processes of the same group (two runs of one plan, a retried task
beside its first try) never share one. A key of the prefix whose relative path would
leave the mirror (``..``, an absolute path) is refused before anything is downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ovlift.cache_schema.store import pid_alive, url_to_fs

log = logging.getLogger("ovlift")


def files_cache() -> Path:
    return Path(os.environ.get("OVLIFT_FILES_CACHE", "~/.cache/ovlift/files")).expanduser()


@dataclass(frozen=True)
class GroupFiles:
    local: Path
    """Where the stage reads and writes them (the folder itself on a local store)."""
    url: str
    """Where they live: the local folder, or the object-store prefix."""


def read_text(url: str, name: str) -> str | None:
    """File ``name`` of a group's files folder (``GroupFiles.url``) as text; None if absent."""
    try:
        with fsspec.open(f"{url.rstrip('/')}/{name}", "rt") as f:
            return f.read()
    except FileNotFoundError:
        return None


@contextmanager
def group_files(root_url: str, path: str, name: str, force: bool) -> Iterator[GroupFiles]:
    """The files folder ``<root_url>/<path>/<name>`` for one run of a stage. A forced rerun
    starts from scratch: earlier files (the checkpoints a run would resume from) are moved
    aside to ``<name>.before-force-<time>-<pid>``, never reused or deleted."""
    fs, root = url_to_fs(root_url)
    remote = f"{root.rstrip('/')}/{path}/{name}"
    group = hashlib.sha256(fs.unstrip_protocol(remote).encode()).hexdigest()[:16]
    if not isinstance(fs, LocalFileSystem):
        _adopt_dead_mirrors(fs, group, remote)  # before a force moves the prefix aside, with them
    if force and fs.exists(remote):
        aside = f"{remote}.before-force-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        _move(fs, remote, aside)
        log.info("%s: forced, so its earlier files were moved to %s", path, aside)
    if isinstance(fs, LocalFileSystem):
        yield GroupFiles(Path(remote), remote)
        return
    url = fs.unstrip_protocol(remote)
    files_cache().mkdir(parents=True, exist_ok=True)
    local = Path(tempfile.mkdtemp(prefix=f"{group}-{os.getpid()}-", dir=files_cache()))
    try:
        for key, target in mirror_targets(fs.find(remote), remote, local, url):
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(key, str(target))
    except BaseException:
        shutil.rmtree(local, ignore_errors=True)
        raise
    try:
        yield GroupFiles(local, url)
    finally:
        _upload(fs, local, remote, url)
        shutil.rmtree(local, ignore_errors=True)  # only once uploaded: else the files stay for a look


def _adopt_dead_mirrors(fs, group: str, remote: str) -> None:
    """Upload, then remove, the mirrors of this group that killed processes of this machine
    left (``<group>-<pid>-*``): what the killed run would have uploaded at its end, so that
    a rerun here resumes from its checkpoints and no mirror is left behind."""
    for folder in sorted(files_cache().glob(f"{group}-*-*")):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            _upload(fs, folder, remote, fs.unstrip_protocol(remote))
            shutil.rmtree(folder, ignore_errors=True)
            log.info("uploaded and removed the mirror of a killed process: %s", folder)


def _upload(fs, local: Path, remote: str, url: str) -> None:
    """Every file of the mirror ``local`` to the prefix ``remote``; a failure is logged with
    the mirror's path (its files stay there) and raised."""
    try:
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            fs.put_file(str(file), f"{remote}/{file.relative_to(local).as_posix()}")
    except BaseException:
        log.error("%s: uploading the stage's files failed; they stay in %s", url, local)
        raise


def mirror_targets(keys: list[str], remote: str, local: Path, url: str) -> list[tuple[str, Path]]:
    """(key, local path) of each object under the prefix ``remote``, every one inside the mirror
    folder ``local``; a key outside the prefix or whose relative path leaves the mirror (``..``
    parts, an absolute path) is a ValueError naming it, before anything is downloaded."""
    found = []
    root = local.resolve()
    for key in keys:
        relative = key[len(remote) + 1 :] if key.startswith(f"{remote}/") else ""
        target = (local / relative).resolve()
        if not relative or ".." in relative.split("/") or target == root or not target.is_relative_to(root):
            raise ValueError(
                f"{url}: refusing object key '{key}': expected '{remote}/<relative path>' without '..' parts, "
                f"so that its copy lands inside the local mirror {local}"
            )
        found.append((key, target))
    return found


def _move(fs, src: str, dst: str) -> None:
    """A folder's move: a rename on a local disk; file by file on an object store (s3fs's
    recursive ``mv`` fails on nested prefixes)."""
    if isinstance(fs, LocalFileSystem):
        os.rename(src, dst)
        return
    for key in fs.find(src):
        fs.mv(key, dst + key[len(src) :])
    if fs.exists(src):
        fs.rm(src, recursive=True)
