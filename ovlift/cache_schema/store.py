"""The workspace store: one Zarr v3 hierarchy, stage groups published atomically.

Layout (see docs/cache_schema.md)::

    <store>/scenes/<scene_id>/<stage>[/<variant>]   per-scene stage groups
    <store>/global/<name>                           results over all scenes
    <store>/_staging/<host>-<pid>-<token>           groups being written
    <store>/_trash/<host>-<pid>-<token>             replaced groups being deleted

Publishing. A writer fills a private staging group, writes ``complete: true``
into it last, then publishes it:

* local stores (a path or ``file://``): ``rename(2)`` of the staging directory
  onto the target. A rename is atomic, so a reader sees the old group or the new
  one, whole. An existing target is first renamed into ``_trash`` (rename onto a
  non-empty directory is refused), so a SIGKILL between the two renames leaves
  *no* group, never half of one; the next run recomputes it.
* other fsspec stores (object stores have no rename): the target's group
  metadata is deleted first (readers now see no group), its old keys removed,
  the staged keys moved in, and the group metadata, which holds ``complete``,
  moved last.

Concurrency: no lock. Two processes running the same scene and stage each write
their own staging group and publish it; the rename loop below makes the last
publisher win and both outcomes are whole groups with the same fingerprint. A
lock was rejected because a SIGKILLed holder leaves it behind (on NFS and object
stores there is no kernel to release it), which would need stale-lock heuristics
worse than the problem. On non-local stores concurrent writers of one group are
not isolated from each other; run one writer per group there.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from ovlift.cache_schema.specs import GLOBAL, SCENES, GroupSpec, SchemaError

STORE_FORMAT = 1
STAGING = "_staging"
TRASH = "_trash"
GROUP_META = "zarr.json"


class GroupState(StrEnum):
    MISSING = "missing"
    INCOMPLETE = "incomplete"
    COMPLETE = "complete"


@dataclass(frozen=True)
class GroupMeta:
    """What a stage group records about how it was made (its attrs)."""

    stage: str
    implementation: str
    stage_version: str
    config: Mapping[str, Any]
    input_fingerprints: Mapping[str, str]
    fingerprint: str
    info: Mapping[str, Any]

    def attrs(self, dims: Mapping[str, int], complete: bool) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "implementation": self.implementation,
            "stage_version": self.stage_version,
            "config": dict(self.config),
            "input_fingerprints": dict(self.input_fingerprints),
            "fingerprint": self.fingerprint,
            "info": dict(self.info),
            "dims": dict(dims),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "complete": complete,
        }


@dataclass
class StageGroup:
    """A complete, published stage group, opened read-only."""

    path: str
    attrs: dict[str, Any]
    group: zarr.Group

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    @property
    def info(self) -> dict[str, Any]:
        return self.attrs.get("info", {})

    @property
    def dims(self) -> dict[str, int]:
        return self.attrs.get("dims", {})

    def __contains__(self, name: str) -> bool:
        try:
            self.group[name]
        except KeyError:
            return False
        return True

    def array(self, name: str) -> zarr.Array:
        try:
            node = self.group[name]
        except KeyError:
            raise KeyError(f"group '{self.path}' has no array '{name}'") from None
        if not isinstance(node, zarr.Array):
            raise KeyError(f"'{self.path}/{name}' is a group, not an array")
        return node

    def load(self, name: str) -> np.ndarray:
        return self.array(name)[...]


class Store:
    """A workspace store at a local path or an fsspec URL."""

    def __init__(self, url: str | os.PathLike[str]) -> None:
        url = str(url)
        self.url = url
        self.local_root: Path | None = None
        if "://" not in url or url.startswith("file://"):
            self.local_root = Path(url.removeprefix("file://")).expanduser().resolve()
            self.local_root.mkdir(parents=True, exist_ok=True)
            self._zstore: Any = LocalStore(self.local_root)
        else:
            self._zstore = FsspecStore.from_url(url)
            self._fs, self._fs_root = fsspec.core.url_to_fs(url)
        root = self._require_group("")
        if "ovlift_store_format" not in root.attrs:
            root.attrs["ovlift_store_format"] = STORE_FORMAT
        self._token = f"{socket.gethostname()}-{os.getpid()}"

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- reading -------------------------------------------------------------------

    def _open(self, path: str) -> zarr.Group | None:
        try:
            node = zarr.open_group(self._zstore, path=path, mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
            return None
        except json.JSONDecodeError:
            return None
        return node

    def inspect(self, path: str) -> tuple[GroupState, dict[str, Any]]:
        """State of the stage group at ``path`` and its attrs (empty when missing)."""
        node = self._open(path)
        if node is None or "stage" not in node.attrs:
            return GroupState.MISSING, {}
        attrs = dict(node.attrs)
        if attrs.get("complete") is not True:
            return GroupState.INCOMPLETE, attrs
        return GroupState.COMPLETE, attrs

    def read(self, path: str, fingerprint: str | None = None) -> StageGroup | None:
        """The complete group at ``path`` (with that fingerprint, if given), else None."""
        node = self._open(path)
        if node is None:
            return None
        attrs = dict(node.attrs)
        if attrs.get("complete") is not True:
            return None
        if fingerprint is not None and attrs.get("fingerprint") != fingerprint:
            return None
        return StageGroup(path=path, attrs=attrs, group=node)

    def scene_ids(self) -> list[str]:
        node = self._open(SCENES)
        return sorted(name for name, _ in node.groups()) if node is not None else []

    def stage_groups(self, scene_id: str) -> list[str]:
        """Paths of every stage group (variants included) under a scene."""
        return self.groups_under(f"{SCENES}/{scene_id}")

    def global_groups(self) -> list[str]:
        """Paths of the global stage groups (cached text embeddings excluded)."""
        return [p for p in self.groups_under(GLOBAL) if not p.startswith(f"{GLOBAL}/text/")]

    def groups_under(self, root: str) -> list[str]:
        """Paths of every stage group under ``root`` (e.g. ``global``), at any depth."""
        found: list[str] = []

        def walk(path: str) -> None:
            node = self._open(path)
            if node is None:
                return
            for name, child in node.groups():
                if "stage" in child.attrs:
                    found.append(f"{path}/{name}")
                else:
                    walk(f"{path}/{name}")

        walk(root)
        return sorted(found)

    # -- writing -------------------------------------------------------------------

    def writer(self, path: str, spec: GroupSpec, meta: GroupMeta, where: str) -> GroupWriter:
        """A writer for the group at ``path``; use as a context manager."""
        return GroupWriter(self, path, spec, meta, where)

    def _new_staging(self) -> str:
        return f"{STAGING}/{self._token}-{uuid.uuid4().hex[:10]}"

    def _staging_group(self, staging: str) -> zarr.Group:
        return zarr.open_group(self._zstore, path=staging, mode="w")

    def _require_group(self, path: str) -> zarr.Group:
        """The group at ``path``, created with its parents if missing. zarr checks, then
        creates, so a process racing another to create a level loses with
        ContainsGroupError; each lost race leaves one more level made, so retry."""
        for _ in range(path.count("/") + 1):
            try:
                return zarr.open_group(self._zstore, path=path, mode="a")
            except zarr.errors.ContainsGroupError:
                pass
        return zarr.open_group(self._zstore, path=path, mode="a")

    def _publish(self, staging: str, target: str) -> None:
        self._require_group(target.rsplit("/", 1)[0])  # parents exist
        if self.local_root is not None:
            self._publish_local(self.local_root / staging, self.local_root / target)
        else:
            self._publish_fsspec(staging, target)

    def _publish_local(self, staging: Path, target: Path) -> None:
        while True:
            try:
                os.rename(staging, target)
                return
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            trash = self.local_root / TRASH / f"{self._token}-{uuid.uuid4().hex[:10]}"
            trash.parent.mkdir(exist_ok=True)
            try:
                os.rename(target, trash)
            except FileNotFoundError:
                continue  # another publisher moved it first; try again
            shutil.rmtree(trash, ignore_errors=True)

    def _publish_fsspec(self, staging: str, target: str) -> None:
        fs, root = self._fs, self._fs_root.rstrip("/")
        src, dst = f"{root}/{staging}", f"{root}/{target}"
        if fs.exists(f"{dst}/{GROUP_META}"):
            fs.rm(f"{dst}/{GROUP_META}")  # readers now see no group
        if fs.exists(dst):
            fs.rm(dst, recursive=True)
        files = sorted(fs.find(src))
        last = f"{src}/{GROUP_META}"
        for f in [f for f in files if f != last] + [last]:
            fs.mv(f, dst + f[len(src) :])
        if fs.exists(src):
            fs.rm(src, recursive=True)

    def _discard(self, staging: str) -> None:
        if self.local_root is not None:
            shutil.rmtree(self.local_root / staging, ignore_errors=True)
        else:
            path = f"{self._fs_root.rstrip('/')}/{staging}"
            if self._fs.exists(path):
                self._fs.rm(path, recursive=True)

    def delete(self, path: str) -> None:
        """Remove a published group (e.g. to force a recompute)."""
        self._discard(path)

    def clean_stale(self) -> list[str]:
        """Remove staging/trash left by dead processes of this host; return what went.

        Entries of live processes (possibly writing now) and of other hosts are
        kept: only their owner can know they are dead.
        """
        if self.local_root is None:
            return []
        host = socket.gethostname()
        removed = []
        for area in (STAGING, TRASH):
            folder = self.local_root / area
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if not entry.is_dir():
                    continue  # the area's own zarr.json
                owner_host, _, rest = entry.name.rpartition("-")[0].rpartition("-")
                pid = int(rest) if rest.isdigit() else None
                if owner_host == host and pid is not None and not _pid_alive(pid):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(f"{area}/{entry.name}")
        return removed

    def leftovers(self) -> list[str]:
        """Staging and trash entries present now (of any process)."""
        if self.local_root is None:
            return []
        return [
            f"{area}/{e.name}"
            for area in (STAGING, TRASH)
            if (self.local_root / area).is_dir()
            for e in (self.local_root / area).iterdir()
            if e.is_dir()
        ]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GroupWriter:
    """Writes one stage group into staging, checks it against its spec, publishes it.

    ``with store.writer(...) as out: out.write("points", pts)`` publishes on a
    clean exit and discards everything on an exception.
    """

    def __init__(self, store: Store, path: str, spec: GroupSpec, meta: GroupMeta, where: str) -> None:
        self.store, self.path, self.spec, self.meta, self.where = store, path, spec, meta, where
        self.dims: dict[str, int] = {}
        self.written: set[str] = set()
        self._staging: str | None = None
        self._group: zarr.Group | None = None

    def __enter__(self) -> GroupWriter:
        self._staging = self.store._new_staging()
        self._group = self.store._staging_group(self._staging)
        self._group.attrs.update(self.meta.attrs(self.dims, complete=False))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._staging is not None
        if exc_type is not None:
            self.store._discard(self._staging)
            return
        try:
            self.spec.check_complete(self.written, self.where)
            self._group.attrs.update(self.meta.attrs(self.dims, complete=True))
            self.store._publish(self._staging, self.path)
        except BaseException:
            self.store._discard(self._staging)
            raise

    def create(self, name: str, shape: tuple[int, ...], dtype: str | None = None) -> zarr.Array:
        """Create an array to be filled piece by piece (e.g. one frame per chunk)."""
        spec = self.spec.array(name)
        dtype = np.dtype(dtype or spec.dtype)
        spec.check(tuple(shape), dtype, self.dims, self.where)
        if name in self.written:
            raise SchemaError(f"{self.where}: array '{name}' written twice")
        assert self._group is not None
        array = self._group.create_array(
            name, shape=tuple(shape), dtype=dtype, chunks=spec.chunk_shape(tuple(shape)), fill_value=0
        )
        self.written.add(name)
        return array

    def write(self, name: str, value: np.ndarray) -> None:
        """Write a whole array at once."""
        value = np.asarray(value)
        array = self.create(name, value.shape, str(value.dtype))
        if value.size:
            array[...] = value

    def set_info(self, **info: Any) -> None:
        """Add stage-specific attrs (recorded under ``info``)."""
        unknown = set(info) - set(self.spec.info)
        if unknown:
            raise SchemaError(f"{self.where}: info keys {sorted(unknown)} not declared by stage '{self.spec.stage}'")
        self.meta = GroupMeta(**{**self.meta.__dict__, "info": {**self.meta.info, **info}})


def iter_arrays(group: zarr.Group, prefix: str = "") -> Iterator[tuple[str, zarr.Array]]:
    """Every array under a group, with its path relative to the group."""
    for name, node in group.members():
        path = f"{prefix}{name}"
        if isinstance(node, zarr.Array):
            yield path, node
        else:
            yield from iter_arrays(node, path + "/")
