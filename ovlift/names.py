"""Names that become parts of paths: one rule, checked where names enter (dataset readers,
plans, the command line) and again where store paths are built (``GroupSpec.path``).

A scene id, variant or other name is a single path component of ``[A-Za-z0-9_.-]``, not
starting with ``.`` (so never ``.`` or ``..``, nor hidden), not ``refs`` or ``HEAD`` (the
store's own names in a slot), at most ``MAX_LENGTH`` characters: nothing a dataset file, a plan or a
command line holds can then address a folder outside the store. Free text that names a file
(a query, a class name in a contact sheet's name) is made safe with ``file_part`` instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MAX_LENGTH = 128
_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
RESERVED = frozenset({"refs", "HEAD"})
"""Names the store's layout uses inside a group's slot (``cache_schema.store``)."""


class UnsafeNameError(ValueError):
    """A name that would not be one safe path component."""


def check_name(name: object, what: str) -> str:
    """``name`` if it is one safe path component; else an error naming ``what`` it is."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or name in RESERVED or len(name) > MAX_LENGTH:
        raise UnsafeNameError(
            f"{what} {name!r} cannot name a folder: use letters, digits, '_', '.' and '-', not first a '.' "
            f"(so never '.' or '..'), not {' or '.join(sorted(RESERVED))}, at most {MAX_LENGTH} characters"
        )
    return name


def file_part(text: str) -> str:
    """``text`` made safe as part of a file name (queries and class names may hold '/', spaces, ...)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_.")


def contained(root: Path, relative: str, what: str) -> Path:
    """``root / relative`` for a file name that a dataset file lists, refused when it is
    absolute or its ``..`` climb out of ``root``. Lexical, so that a dataset folder may hold
    symbolic links to other disks (as large datasets often do)."""
    path = Path(relative)
    if path.is_absolute() or os.path.normpath(path).split(os.sep)[0] == "..":
        raise UnsafeNameError(f"{what} '{relative}', which lies outside '{root}'")
    return root / path
