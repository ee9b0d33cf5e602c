"""Files written whole or not at all: one way for every plain file ovlift writes outside the
store (checkpoints, PLYs, exports, pages)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary name of this process's own beside ``path`` (two writers of
    one file never share it), then a rename; on failure the temporary file is removed, so a
    crash or an error never leaves half a file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
