"""Progress bars for every loop over scenes or frames (tqdm, on stderr).

Set ``OVLIFT_PROGRESS=0`` to silence them (e.g. in logs that cannot redraw).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    disabled = os.environ.get("OVLIFT_PROGRESS", "1") == "0"
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=disabled, mininterval=0.5))
