"""How the store notices its own damage: chunk checksums, a file manifest per version, and
reads that name the damaged chunk.

Three layers, each catching what the one before cannot:

* **Chunk codecs** (``CHUNK_CODECS``): every array is written through zstd with its frame
  checksum (integer images: Blosc's shuffle and zstd, ``SHUFFLED_CODECS``) and then Zarr
  v3's ``crc32c`` codec, so a flipped byte in a chunk fails its read ("Stored and computed
  checksum do not match") instead of decoding to wrong numbers.
* **A manifest per version**: at publish, ``<slot>/<version>.files.json`` lists every file of
  the version with its size and CRC-32C (the group's and arrays' ``zarr.json`` included), and
  both pointers to the version record the manifest's SHA-256 (``digest``). A deleted chunk
  (which Zarr would silently read as the fill value) or damaged metadata shows there. The
  manifest sits beside the version, not in it, because Zarr warns about foreign files in a
  group's folder and the group's own ``zarr.json`` cannot hold its own checksum.
* **Reads that name the chunk** (``CheckedArray``): a stage that meets a chunk that does not
  decode fails with the group, version, array and chunk key and the command that repairs it.

``ovlift verify`` (``verify_version``) checks both the manifest and every chunk's decode.
Versions published before checksums have no manifest: verify decodes their chunks and says
that nothing else could be checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec, ZstdCodec

if TYPE_CHECKING:
    from ovlift.cache_schema.store import StageGroup, Store

MANIFEST_SUFFIX = ".files.json"
"""``<slot>/<version>.files.json``: the version's files, sizes and CRC-32Cs."""
GROUP_METADATA = "(group metadata)"
METADATA = "zarr.json"

CHUNK_CODECS = (ZstdCodec(level=0, checksum=True), Crc32cCodec())
"""Compressors of every array the store writes but integer images: zstd (level 0 is Zarr's
default) with its content checksum, then a CRC-32C of the compressed bytes
(``benchmarks/store_integrity.py`` measures their cost)."""
SHUFFLED_CODECS = (BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle), Crc32cCodec())
"""Compressors of integer images (uint16 depth): each value's bytes regrouped by significance
(Blosc's byte shuffle) before zstd, 6 % smaller than ``CHUNK_CODECS`` on real Kinect depth
and 11 % on noisy depth at about its speed, where bit shuffle loses 60 % on the Kinect depth
and zstd level 9 is 4x slower to write (``benchmarks/frame_bytes.py``). Blosc has no content
checksum; the CRC-32C after it still catches a flipped byte."""
CODEC_CHAINS = {"zstd": CHUNK_CODECS, "shuffled-zstd": SHUFFLED_CODECS}
"""``ArraySpec.codec`` -> compressors."""


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def manifest_bytes(files: Iterable[tuple[str, bytes]]) -> bytes:
    """The manifest of a version's files (path relative to the version, content)."""
    entries = {rel: [len(data), crc32c(data)] for rel, data in files}  # one file in memory at a time
    return json.dumps({"format": 1, "files": entries}, sort_keys=True).encode()


def digest(manifest: bytes) -> str:
    """What the pointers record of a manifest."""
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


@dataclass(frozen=True)
class Damage:
    """One damaged piece of a published version."""

    path: str
    """The group's slot, e.g. ``scenes/s/project``."""
    version: str
    array: str
    """The array's path in the group, or ``(group metadata)``."""
    chunk: str
    """The chunk key (``c/3/0``), ``zarr.json`` for an array's metadata, or the file."""
    problem: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


class DamagedGroupError(RuntimeError):
    """A published version's chunk does not decode: the store was damaged after publishing."""


def locate(rel: str, containers: set[str]) -> tuple[str, str]:
    """(array, chunk) of a file of a version, given the folders that hold a ``zarr.json``."""
    parts = rel.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        folder = "/".join(parts[:cut])
        if folder in containers:
            return folder, "/".join(parts[cut:])
    return GROUP_METADATA, rel


def chunk_key(array: zarr.Array, index: tuple[int, ...]) -> str:
    return array.metadata.encode_chunk_key(index)


def decode_damage(array: zarr.Array) -> Iterable[tuple[str, str]]:
    """(chunk key, error) of each chunk of ``array`` that does not decode."""
    for index in np.ndindex(*array.cdata_shape):
        try:
            array.blocks[index]
        except (OSError, TimeoutError):  # the disk or the network, not the chunk: never called damage
            raise
        except Exception as err:  # noqa: BLE001 - any decoder's error: zstd, crc32c, a truncated buffer
            yield chunk_key(array, index), f"{type(err).__name__}: {err}"


def verify_version(store: Store, path: str, version: str, recorded_digest: str | None) -> tuple[list[Damage], int]:
    """Damage found in one version (manifest, then every chunk's decode) and the bytes read."""
    found: dict[tuple[str, str], Damage] = {}

    def add(array: str, chunk: str, problem: str) -> None:
        found.setdefault((array, chunk), Damage(path, version, array, chunk, problem))

    files = store.version_files(path, version)
    containers = {rel.rsplit("/", 1)[0] for rel in files if rel.endswith("/" + METADATA)}
    raw = store.read_bytes(f"{path}/{version}{MANIFEST_SUFFIX}")
    nbytes = _check_files(store, f"{path}/{version}", files, containers, raw, recorded_digest, add)
    try:
        group = store.open_version(path, version)
    except Exception:  # noqa: BLE001 - whatever Zarr raises on metadata it cannot take
        group = None
    if group is None:
        add(GROUP_METADATA, METADATA, "the group's metadata does not open")
        return list(found.values()), nbytes
    for folder in sorted(containers):
        try:
            node = group[folder]
        except Exception as err:  # noqa: BLE001 - its zarr.json does not parse: JSON, codec or type errors
            add(folder, METADATA, f"metadata does not open ({type(err).__name__}: {err})")
            continue
        if isinstance(node, zarr.Array):
            for chunk, error in decode_damage(node):
                add(folder, chunk, f"does not decode ({error})")
            if raw is None:
                nbytes += node.nbytes_stored()
    return list(found.values()), nbytes


def _check_files(
    store: Store,
    prefix: str,
    files: list[str],
    containers: set[str],
    raw: bytes | None,
    recorded_digest: str | None,
    add: Callable[[str, str, str], None],
) -> int:
    """Check a version's files against its manifest (``raw``; None before checksums); return
    the bytes read. The manifest's folders with a ``zarr.json`` join ``containers``."""
    manifest = prefix.rsplit("/", 1)[-1] + MANIFEST_SUFFIX
    if raw is None:
        if recorded_digest is not None:
            add(GROUP_METADATA, manifest, "manifest missing (its pointer records a digest)")
        return 0
    if recorded_digest is not None and digest(raw) != recorded_digest:
        add(GROUP_METADATA, manifest, "manifest differs from the digest its pointer recorded")
        return 0
    try:
        listed: dict[str, list[int]] = json.loads(raw)["files"]
    except (ValueError, KeyError, TypeError) as err:
        add(GROUP_METADATA, manifest, f"manifest does not parse ({err})")
        return 0
    containers |= {rel.rsplit("/", 1)[0] for rel in listed if rel.endswith("/" + METADATA)}
    nbytes = 0
    for rel, (size, crc) in listed.items():
        data = store.read_bytes(f"{prefix}/{rel}")
        array, chunk = locate(rel, containers)
        if data is None:
            add(array, chunk, "missing (listed in the manifest)")
            continue
        nbytes += len(data)
        if len(data) != size:
            add(array, chunk, f"{len(data)} bytes, the manifest says {size}")
        elif crc32c(data) != crc:
            add(array, chunk, "CRC-32C differs from the manifest's")
    for rel in sorted(set(files) - set(listed)):
        add(*locate(rel, containers), "not in the manifest (written after publishing)")
    return nbytes


class CheckedArray:
    """A stage's view of a published array: reads as the Zarr array does, and a chunk that
    does not decode fails with the group, version, array and chunk named."""

    def __init__(self, array: zarr.Array, group: StageGroup, name: str) -> None:
        self._array, self._group, self._name = array, group, name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._array, attr)

    def __len__(self) -> int:
        return int(self._array.shape[0])

    def __getitem__(self, selection: Any) -> Any:
        return self._checked(lambda: self._array[selection])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)

    @property
    def oindex(self) -> _CheckedIndexer:
        return _CheckedIndexer(self, self._array.oindex)

    @property
    def vindex(self) -> _CheckedIndexer:
        return _CheckedIndexer(self, self._array.vindex)

    @property
    def blocks(self) -> _CheckedIndexer:
        return _CheckedIndexer(self, self._array.blocks)

    def _checked(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except (IndexError, TypeError, OSError, TimeoutError):  # a bad selection, or I/O (retried): not damage
            raise
        except Exception as err:  # re-raised unless a chunk is found damaged
            damaged = next(iter(decode_damage(self._array)), None)
            if damaged is None:
                raise
            g = self._group
            raise DamagedGroupError(
                f"group '{g.path}' (version {g.version}), array '{self._name}', chunk '{damaged[0]}' is damaged: "
                f"{damaged[1]}. Run `ovlift verify {g.store_url or 'STORE'} --repair`, then run again "
                "(the damaged version is moved aside and recomputed)"
            ) from err


class _CheckedIndexer:
    def __init__(self, owner: CheckedArray, indexer: Any) -> None:
        self._owner, self._indexer = owner, indexer

    def __getitem__(self, selection: Any) -> Any:
        return self._owner._checked(lambda: self._indexer[selection])
