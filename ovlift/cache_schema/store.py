"""The workspace store: one Zarr v3 hierarchy of immutable, versioned stage groups.

Layout (see docs/cache_schema.md)::

    <store>/scenes/<scene_id>/<stage>[/<variant>]/             a group's slot
        <fp12>-<token>/                                        one published version (never changed)
        refs/<fingerprint>                                     pointer: that fingerprint's current version
        refs/HEAD                                              pointer: the version the last run used
    <store>/global/<stage>[/<variant>]/...                     the same, for results over all scenes
    <store>/_staging/<host>-<pid>-<token>                      groups being written

Publishing. A writer fills a private staging group, writes ``complete: true``
into it last, moves it to a new version folder (a ``rename(2)`` on a local
store; on object stores the keys, group metadata last), and only then writes
the two pointers, each atomically (write + rename; one PUT on object stores).
The manifest of the version's files (``<version>.files.json`` beside it) is written
before the move and its digest goes into both pointers (``integrity``: how damage is found).
A version is never modified or replaced: a reader resolves a pointer once and
reads that version to the end, whatever publishes meanwhile. A writer killed
before its pointers leaves only an unreferenced version, which ``gc`` removes.

Versions stay until ``ovlift gc PLAN... --yes``: switching a config back to an
earlier value finds its version through ``refs/<fingerprint>`` (a cache hit),
and ``--force`` publishes a new version beside the old one. Nothing but ``gc``
deletes results.

Concurrency: no lock. Writers of one group (same or other fingerprints) each
publish their own version; the last pointer write wins, and every outcome is a
whole version. A lock was rejected because a SIGKILLed holder leaves it behind
(on NFS and object stores there is no kernel to release it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from ovlift.cache_schema.integrity import (
    CODEC_CHAINS,
    MANIFEST_SUFFIX,
    CheckedArray,
    Damage,
    DamagedGroupError,
    digest,
    manifest_bytes,
)
from ovlift.cache_schema.specs import GLOBAL, SCENES, GroupSpec, SchemaError

log = logging.getLogger("ovlift")

STORE_FORMAT = 2
"""2: immutable versions behind pointers (1: one group per path, replaced in place)."""
STAGING = "_staging"
DAMAGED = "_damaged"
"""Where ``ovlift verify --repair`` moves damaged versions (kept for a look; delete by hand)."""
REFS = "refs"
HEAD = "HEAD"
GROUP_META = "zarr.json"
FRESH_LISTINGS = {"use_listings_cache": False}
"""fsspec options of an object store's filesystem: s3fs caches listings per instance (and
instances per process), so without this a process never sees versions others published."""


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) of a store's URL or local path, listings never cached (``FRESH_LISTINGS``)."""
    return fsspec.core.url_to_fs(url, **(FRESH_LISTINGS if "://" in url else {}))


class StoreFormatError(ValueError):
    """The store was written by an ovlift with another layout."""


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
    oracles: tuple[str, ...] = ()
    """Ground truth that this group or anything upstream used as an oracle (ablations)."""
    input_versions: Mapping[str, str] = field(default_factory=dict)
    """Upstream group path -> the version read: a rerun of an upstream group (``--force``,
    a repair) publishes a new version under the same fingerprint, and this tells the runner
    that what read the old one must rerun too."""

    def attrs(self, dims: Mapping[str, int], complete: bool) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "implementation": self.implementation,
            "stage_version": self.stage_version,
            "config": dict(self.config),
            "input_fingerprints": dict(self.input_fingerprints),
            "fingerprint": self.fingerprint,
            "info": dict(self.info),
            "oracles": list(self.oracles),
            "input_versions": dict(self.input_versions),
            "dims": dict(dims),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "complete": complete,
        }


@dataclass
class StageGroup:
    """A complete, published stage group, opened read-only."""

    path: str
    """The group's logical path (its slot), e.g. ``scenes/s/input``."""
    attrs: dict[str, Any]
    group: zarr.Group
    version: str = ""
    """The version folder read (``<fp12>-<token>``), fixed for this reader."""
    store_url: str = ""
    """The store it was read from (named in errors)."""
    digest: str | None = None
    """Its manifest's digest, as its pointer records it (None before checksums)."""

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    @property
    def info(self) -> dict[str, Any]:
        return self.attrs.get("info", {})

    @property
    def oracles(self) -> tuple[str, ...]:
        """Ground truth used as an oracle by this group or upstream (empty: label-free)."""
        return tuple(self.attrs.get("oracles", ()))

    @property
    def dims(self) -> dict[str, int]:
        return self.attrs.get("dims", {})

    def __contains__(self, name: str) -> bool:
        try:
            self.group[name]
        except KeyError:
            return False
        return True

    def array(self, name: str) -> CheckedArray:
        """The array ``name``, read as a Zarr array; a chunk that does not decode raises
        ``DamagedGroupError`` naming it."""
        try:
            node = self.group[name]
        except KeyError:
            raise KeyError(f"group '{self.path}' has no array '{name}'") from None
        except Exception as err:  # its zarr.json does not parse
            raise DamagedGroupError(
                f"group '{self.path}' (version {self.version}), array '{name}': its metadata (zarr.json) is "
                f"damaged ({type(err).__name__}: {err}). Run `ovlift verify {self.store_url or 'STORE'} --repair`"
            ) from err
        if not isinstance(node, zarr.Array):
            raise KeyError(f"'{self.path}/{name}' is a group, not an array")
        return CheckedArray(node, self, name)

    def load(self, name: str) -> np.ndarray:
        # zarr types [...] as any of its scalars too; an array with dims reads as an ndarray
        return np.asarray(self.array(name)[...])


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
            # no listing cache: other processes publish into the store while this one reads it
            self._zstore = FsspecStore.from_url(url, storage_options=FRESH_LISTINGS)
            self._fs, self._fs_root = url_to_fs(url)
        root = self._require_group("")
        found = root.attrs.get("ovlift_store_format")
        if found is None:
            root.attrs["ovlift_store_format"] = STORE_FORMAT
        elif found != STORE_FORMAT:
            raise StoreFormatError(
                f"store '{url}' has format {found}; this ovlift reads format {STORE_FORMAT} "
                "(immutable group versions). Nothing in it was changed: write to a new store, "
                "or move this one aside and rerun (results are recomputed)"
            )
        self._token = f"{socket.gethostname()}-{os.getpid()}"

    @property
    def files_root(self) -> Path | None:
        """Where plain files of groups (checkpoints, reports) live: ``<store>.files`` (local stores)."""
        return self.local_root.with_name(self.local_root.name + ".files") if self.local_root else None

    @property
    def files_url(self) -> str:
        """``files_root``, or ``<store URL>.files`` for an object store (``cache_schema.files``)."""
        return str(self.files_root) if self.files_root is not None else f"{self.url.rstrip('/')}.files"

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- reading -------------------------------------------------------------------

    def _open(self, path: str) -> zarr.Group | None:
        try:
            node = zarr.open_group(self._zstore, path=path, mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
            return None
        except (ValueError, TypeError):  # damaged metadata: bad JSON or UTF-8, a key renamed by a flipped bit
            return None
        return node

    # -- pointers and listings (the two backends) ---------------------------------

    def _key(self, key: str) -> str:
        return str(self.local_root / key) if self.local_root is not None else f"{self._fs_root.rstrip('/')}/{key}"

    def _read_pointer(self, key: str) -> dict[str, str] | None:
        try:
            if self.local_root is not None:
                text = (self.local_root / key).read_text()
            else:
                text = self._fs.cat_file(self._key(key)).decode()
            return json.loads(text)
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None

    def _write_pointer(self, key: str, value: dict[str, str]) -> None:
        self._write_bytes(key, json.dumps(value).encode())

    def _write_bytes(self, key: str, data: bytes) -> None:
        """A whole file, atomically (write + rename; one PUT on object stores)."""
        if self.local_root is None:
            self._fs.pipe_file(self._key(key), data)
            return
        path = self.local_root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{self._token}-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def read_bytes(self, key: str) -> bytes | None:
        """A file of the store; None if absent."""
        try:
            if self.local_root is not None:
                return (self.local_root / key).read_bytes()
            return self._fs.cat_file(self._key(key))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _files(self, folder: str) -> list[str]:
        """Paths (relative to ``folder``) of every file under it."""
        if self.local_root is not None:
            root = self.local_root / folder
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        prefix = self._key(folder).rstrip("/") + "/"
        return sorted(f[len(prefix) :] for f in self._fs.find(prefix))

    def _manifests(self, path: str) -> list[str]:
        """Names of the manifest files in a slot (one per version published since checksums)."""
        if self.local_root is not None:
            folder = self.local_root / path
            names = [e.name for e in os.scandir(folder) if e.is_file()] if folder.is_dir() else []
        else:
            entries = self._fs.ls(self._key(path), detail=True) if self._fs.exists(self._key(path)) else []
            names = [e["name"].rsplit("/", 1)[-1] for e in entries if e["type"] == "file"]
        return sorted(n for n in names if n.endswith(MANIFEST_SUFFIX))

    def _children(self, path: str) -> list[str]:
        """Names of the folders directly under ``path``; a symbolic link is not one (nothing
        that lists the store, gc above all, ever follows a link out of it)."""
        if self.local_root is not None:
            try:
                return sorted(e.name for e in os.scandir(self.local_root / path) if e.is_dir(follow_symlinks=False))
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            entries = self._fs.ls(self._key(path), detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory")

    def _remove(self, path: str) -> None:
        """Delete a folder or file of the store: never through a link, never outside it."""
        if self.local_root is not None:
            target = self.local_root / path
            if not target.parent.resolve().is_relative_to(self.local_root) or ".." in Path(path).parts:
                raise StoreFormatError(f"refusing to delete '{target}': it is not inside the store {self.local_root}")
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # rmtree unlinks the links inside, never follows them
            else:
                target.unlink(missing_ok=True)
        elif self._fs.exists(self._key(path)):
            self._fs.rm(self._key(path), recursive=True)

    # -- reading -------------------------------------------------------------------

    def head(self, path: str) -> dict[str, str] | None:
        """The HEAD pointer of a slot (``version``, ``fingerprint``, ``digest``); None if none."""
        return self._read_pointer(f"{path}/{REFS}/{HEAD}")

    def inspect(self, path: str) -> tuple[GroupState, dict[str, Any], str]:
        """State of the stage group at ``path`` (its HEAD version), its attrs (empty when missing)
        and that version's name (empty when there is none)."""
        head = self.head(path)
        if head is None:
            return GroupState.MISSING, {}, ""
        node = self._open(f"{path}/{head['version']}")
        if node is None or node.attrs.get("complete") is not True:
            return GroupState.INCOMPLETE, dict(node.attrs) if node is not None else {}, head["version"]
        return GroupState.COMPLETE, dict(node.attrs), head["version"]

    def read(self, path: str, fingerprint: str | None = None) -> StageGroup | None:
        """The group at ``path``: the version of that fingerprint if given, else the HEAD
        version; None if there is none. The version read never changes afterwards."""
        ref = self._read_pointer(f"{path}/{REFS}/{fingerprint or HEAD}")
        if ref is None:
            return None
        node = self._open(f"{path}/{ref['version']}")
        if node is None:
            if self._children(f"{path}/{ref['version']}") or self.read_bytes(f"{path}/{ref['version']}/{GROUP_META}"):
                log.warning("%s: version %s does not open (damaged metadata?): recomputed", path, ref["version"])
            return None
        attrs = dict(node.attrs)
        if attrs.get("complete") is not True:
            return None
        if fingerprint is not None and attrs.get("fingerprint") != fingerprint:
            return None
        return StageGroup(
            path=path, attrs=attrs, group=node, version=ref["version"], store_url=self.url, digest=ref.get("digest")
        )

    def set_head(self, group: StageGroup) -> None:
        """Make ``group``'s version the one plain reads (and downstream stages) get."""
        head = self._read_pointer(f"{group.path}/{REFS}/{HEAD}")
        if head is None or head["version"] != group.version:
            ref = {"version": group.version, "fingerprint": group.fingerprint}
            self._write_pointer(f"{group.path}/{REFS}/{HEAD}", ref | ({"digest": group.digest} if group.digest else {}))

    def scene_ids(self) -> list[str]:
        return self._children(SCENES)

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
            children = self._children(path)
            if REFS in children:  # a slot: its other folders are versions
                found.append(path)
                return
            for name in children:
                walk(f"{path}/{name}")

        for name in self._children(root):
            walk(f"{root}/{name}")
        return sorted(found)

    def versions(self, path: str) -> list[str]:
        """Version folders of a group's slot, referenced or not."""
        return [name for name in self._children(path) if name != REFS]

    def refs(self, path: str) -> dict[str, dict[str, str]]:
        """Fingerprint -> pointer of each fingerprint published at ``path``."""
        if self.local_root is not None:
            folder = self.local_root / path / REFS
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        else:
            key = self._key(f"{path}/{REFS}")
            names = (
                [e.rstrip("/").rsplit("/", 1)[-1] for e in self._fs.ls(key, detail=False)]
                if self._fs.exists(key)
                else []
            )
        found = {}
        for name in names:
            if name != HEAD and not name.startswith(".") and (ref := self._read_pointer(f"{path}/{REFS}/{name}")):
                found[name] = ref
        return found

    def version_files(self, path: str, version: str) -> list[str]:
        """Files of a published version, relative to it."""
        return self._files(f"{path}/{version}")

    def open_version(self, path: str, version: str) -> zarr.Group | None:
        return self._open(f"{path}/{version}")

    def reusable_versions(self, path: str) -> dict[str, str | None]:
        """Version -> manifest digest (None before checksums) of every version a run may
        reuse: the one each fingerprint's pointer names, and HEAD's."""
        pointers = list(self.refs(path).values())
        head = self._read_pointer(f"{path}/{REFS}/{HEAD}")
        return {ref["version"]: ref.get("digest") for ref in ([head] if head else []) + pointers}

    def quarantine(self, path: str, version: str, damage: list[Damage]) -> str:
        """Move a damaged version (and its manifest) to ``_damaged/`` with what was wrong,
        so that no run reuses it: its pointers then name nothing and the next run recomputes
        it. Returns where it went."""
        aside = f"{DAMAGED}/{path}/{version}"
        self._write_bytes(f"{aside}.damage.json", json.dumps([d.to_json() for d in damage], indent=1).encode())
        for src, dst in (
            (f"{path}/{version}{MANIFEST_SUFFIX}", f"{aside}{MANIFEST_SUFFIX}"),
            (f"{path}/{version}", aside),
        ):
            if self.local_root is not None:
                if (self.local_root / src).exists():
                    (self.local_root / dst).parent.mkdir(parents=True, exist_ok=True)
                    os.rename(self.local_root / src, self.local_root / dst)
                continue
            for key in self._fs.find(self._key(src)) if self._fs.exists(self._key(src)) else []:
                self._fs.mv(key, self._key(dst) + key[len(self._key(src)) :])
        return aside

    def quarantined(self, path: str, version: str) -> bool:
        """Whether ``verify --repair`` moved this version aside."""
        return self.read_bytes(f"{DAMAGED}/{path}/{version}.damage.json") is not None

    def gc(self, keep: Mapping[str, set[str]], dry_run: bool = False) -> list[tuple[str, int]]:
        """Remove every version but the current one of each kept (path, fingerprint), with
        the pointers to them; return what went (or would), each with its bytes. Cached text
        embeddings stay. ``ovlift.pipeline.gc`` refuses to call it while runs write."""
        removed: list[tuple[str, int]] = []
        for path in [p for s in self.scene_ids() for p in self.stage_groups(s)] + self.global_groups():
            wanted = keep.get(path, set())
            refs = self.refs(path)
            kept = {fp: ref for fp, ref in refs.items() if fp in wanted}
            kept_versions = {ref["version"] for ref in kept.values()}
            versions = self.versions(path)
            gone = [f"{path}/{v}" for v in versions if v not in kept_versions]
            orphans = [m for m in self._manifests(path) if m.removesuffix(MANIFEST_SUFFIX) not in versions]
            gone += [f"{path}/{m}" for m in orphans]  # of a writer killed before its move
            gone += [f"{path}/{REFS}/{fp}" for fp in refs if fp not in kept]
            removed += [(p, self._size(p) + self._size(p + MANIFEST_SUFFIX)) for p in gone]
            if dry_run:
                continue
            if not kept:
                self._remove(path)
                continue
            head = self._read_pointer(f"{path}/{REFS}/{HEAD}")
            if head is None or head["version"] not in kept_versions:  # point it at a kept version first
                self._write_pointer(f"{path}/{REFS}/{HEAD}", next(iter(kept.values())))
            for p in gone:
                self._remove(p)
                self._remove(p + MANIFEST_SUFFIX)  # a version's manifest goes with it
        return removed

    def _size(self, path: str) -> int:
        if self.local_root is not None:
            target = self.local_root / path
            if target.is_symlink() or not target.exists():
                return 0
            if target.is_file():
                return target.stat().st_size
            return sum(f.lstat().st_size for f in target.rglob("*") if f.is_file() and not f.is_symlink())
        return int(self._fs.du(self._key(path))) if self._fs.exists(self._key(path)) else 0

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

    def _publish(self, staging: str, path: str, fingerprint: str) -> None:
        """Move a complete staging group in as a new version of ``path``, then point to it."""
        version = f"{fingerprint[:12]}-{uuid.uuid4().hex[:8]}"
        self._write_pointer(f"{path}/{REFS}/.slot", {})  # marks the slot before anything can be in it
        manifest = manifest_bytes((rel, self.read_bytes(f"{staging}/{rel}") or b"") for rel in self._files(staging))
        self._write_bytes(f"{path}/{version}{MANIFEST_SUFFIX}", manifest)
        if self.local_root is not None:
            os.rename(self.local_root / staging, self.local_root / path / version)  # a new name: never exists
        else:
            fs, src, dst = self._fs, self._key(staging), self._key(f"{path}/{version}")
            last = f"{src}/{GROUP_META}"
            for f in [f for f in sorted(fs.find(src)) if f != last] + [last]:
                fs.mv(f, dst + f[len(src) :])
            if fs.exists(src):
                fs.rm(src, recursive=True)
        ref = {"version": version, "fingerprint": fingerprint, "digest": digest(manifest)}
        self._write_pointer(f"{path}/{REFS}/{fingerprint}", ref)
        self._write_pointer(f"{path}/{REFS}/{HEAD}", ref)  # last: plain readers switch now

    def _discard(self, staging: str) -> None:
        if self.local_root is not None:
            shutil.rmtree(self.local_root / staging, ignore_errors=True)
        else:
            path = f"{self._fs_root.rstrip('/')}/{staging}"
            if self._fs.exists(path):
                self._fs.rm(path, recursive=True)

    def clean_stale(self) -> list[str]:
        """Remove staging groups left by dead processes of this host; return what went.

        Entries of live processes (possibly writing now) and of other hosts are
        kept: only their owner can know they are dead.
        """
        host = socket.gethostname()
        removed = []
        for name in self._children(STAGING):
            owner_host, _, rest = name.rpartition("-")[0].rpartition("-")
            pid = int(rest) if rest.isdigit() else None
            if owner_host == host and pid is not None and not pid_alive(pid):
                self._discard(f"{STAGING}/{name}")
                removed.append(f"{STAGING}/{name}")
        return removed

    def leftovers(self) -> list[str]:
        """Staging entries present now (of any process, on any host)."""
        return [f"{STAGING}/{name}" for name in self._children(STAGING)]


def pid_alive(pid: int) -> bool:
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
        assert self._staging is not None and self._group is not None
        if exc_type is not None:
            self.store._discard(self._staging)
            return
        try:
            self.spec.check_complete(self.written, self.where)
            self._group.attrs.update(self.meta.attrs(self.dims, complete=True))
            self.store._publish(self._staging, self.path, self.meta.fingerprint)
        except BaseException:
            self.store._discard(self._staging)
            raise

    def create(self, name: str, shape: tuple[int, ...], dtype: str | None = None) -> zarr.Array:
        """Create an array to be filled piece by piece (e.g. one frame per chunk)."""
        return self._create(name, shape, dtype, None)

    def _create(self, name: str, shape: tuple[int, ...], dtype: str | None, first_chunk: int | None) -> zarr.Array:
        spec = self.spec.array(name)
        np_dtype = np.dtype(dtype or spec.dtype)
        spec.check(tuple(shape), np_dtype, self.dims, self.where)
        if name in self.written:
            raise SchemaError(f"{self.where}: array '{name}' written twice")
        assert self._group is not None
        chunks = spec.chunk_shape(tuple(shape))
        array = self._group.create_array(
            name,
            shape=tuple(shape),
            dtype=np_dtype,
            chunks=chunks if first_chunk is None else (first_chunk, *chunks[1:]),
            fill_value=0,
            compressors=CODEC_CHAINS[spec.codec],
        )
        self.written.add(name)
        return array

    def append(self, name: str, value: np.ndarray) -> None:
        """Append ``value`` along the first axis of ``name``, created on the first call: an array
        whose length is known only at the end (the frames' image files, back to back). Its
        first dimension must be its own (no other array's); chunk-aligned appends are fastest."""
        value = np.asarray(value)
        assert self._group is not None
        if name not in self.written:
            spec = self.spec.array(name)
            if not isinstance(spec.chunks[0], int):
                raise SchemaError(f"{self.where}: array '{name}' is appended to, so its spec needs a chunk length")
            self._create(name, (0, *value.shape[1:]), str(value.dtype), spec.chunks[0])
        array = self._group[name]
        assert isinstance(array, zarr.Array)
        array.append(value)
        self.dims[str(self.spec.array(name).dims[0])] = array.shape[0]

    def set_dims(self, **sizes: int) -> None:
        """Named dimensions that no written array's shape carries: ``H`` and ``W`` of frames
        stored as image files (``frames/color_bytes`` decodes to (T, H, W, 3)). A size that
        disagrees with an array's is a SchemaError, as between arrays."""
        for dim, size in sizes.items():
            if self.dims.setdefault(dim, size) != size:
                raise SchemaError(
                    f"{self.where}: dimension {dim}={size}, but an array of the group has {dim}={self.dims[dim]}"
                )

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


def oracles_of(groups: Iterable[StageGroup], own: str | None = None) -> tuple[str, ...]:
    """The oracles behind a group made from ``groups`` (plus its own, if it reads one), sorted."""
    found = {o for g in groups for o in g.oracles}
    return tuple(sorted(found | ({own} if own else set())))


def iter_arrays(group: zarr.Group, prefix: str = "") -> Iterator[tuple[str, zarr.Array]]:
    """Every array under a group, with its path relative to the group."""
    for name, node in group.members():
        path = f"{prefix}{name}"
        if isinstance(node, zarr.Array):
            yield path, node
        else:
            yield from iter_arrays(node, path + "/")
