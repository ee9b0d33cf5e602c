"""Content digests of files and folders, remembered so that unchanged files are read once.

Fingerprints hash what files hold, not their names and sizes: retrained weights or
recomputed features usually keep the size. Reading every image of every scene on
every run would be slow, so a file's digest is remembered under its
(path, inode, size, mtime_ns, ctime_ns). ``cp -p``, ``rsync -a`` and tar restore
mtime, but writing a file or replacing it always sets a new ctime (or inode), so a
changed file never matches a remembered entry.

The memory is an SQLite file, ``$OVLIFT_HASH_CACHE`` or
``~/.cache/ovlift/file-digests.sqlite``, shared by processes (SQLite locks it).
Where it cannot be opened, digests are computed every time (slower, still right).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("ovlift")

_SCHEMA = "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, stat TEXT NOT NULL, digest TEXT NOT NULL)"


def cache_path() -> Path:
    """Where remembered digests live."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ovlift" / "file-digests.sqlite"
    return Path(os.environ.get("OVLIFT_HASH_CACHE", default))


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _open_cache() -> sqlite3.Connection | None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=60)
        db.execute(_SCHEMA)
        return db
    except (sqlite3.Error, OSError) as err:
        log.warning("file digest cache '%s' unusable (%s); hashing every file", path, err)
        return None


def file_digests(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The content digest (blake2b, 32 hex digits) of each file, in order.

    Raises FileNotFoundError naming a missing file."""
    files = [Path(p).resolve() for p in paths]
    keys = [_stat_key(p) for p in files]
    db = _open_cache()
    known: dict[str, tuple[str, str]] = {}
    if db is not None:
        with db:
            names = [str(p) for p in files]
            for start in range(0, len(names), 500):  # SQLite's limit on bound parameters
                chunk = names[start : start + 500]
                rows = db.execute(
                    f"SELECT path, stat, digest FROM digests WHERE path IN ({','.join('?' * len(chunk))})", chunk
                )
                known.update((path, (stat, digest)) for path, stat, digest in rows)
    result, fresh = [], []
    for path, key in zip(files, keys):
        stat_digest = known.get(str(path))
        if stat_digest is not None and stat_digest[0] == key:
            result.append(stat_digest[1])
            continue
        digest = _hash_file(path)
        if _stat_key(path) == key:  # remember only what did not change while it was read
            fresh.append((str(path), key, digest))
        result.append(digest)
    if db is not None:
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?)", fresh)
        except sqlite3.Error as err:  # e.g. a read-only cache: the digests are still right
            log.debug("could not remember file digests: %s", err)
        db.close()
    return result


def file_digest(path: str | os.PathLike[str]) -> str:
    return file_digests([path])[0]


def folder_digests(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Relative path -> content digest of every file under ``folder`` (or of ``folder``
    itself, under the name "", when it is a file)."""
    root = Path(folder)
    if root.is_file():
        return {"": file_digest(root)}
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): d for p, d in zip(files, file_digests(files))}


def folder_digest(folder: str | os.PathLike[str]) -> str:
    """One digest of a folder's file names and contents."""
    parts = ";".join(f"{name}:{digest}" for name, digest in folder_digests(folder).items())
    return hashlib.blake2b(parts.encode(), digest_size=16).hexdigest()
