"""Progress of every loop over scenes, frames or batches, on stderr.

On a terminal, tqdm bars. Elsewhere (a pipe, a log file, CI), bars would redraw with
carriage returns through the log lines, so plain lines instead: one when a loop ends and
one at most every ``LINE_INTERVAL_S`` while it runs ("toy_0003: t: 4/12 batches (1.2 s)").
``OVLIFT_PROGRESS=0`` silences both; ``OVLIFT_PROGRESS=lines`` gives lines on a terminal too.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

LINE_INTERVAL_S = 10.0
"""Without a terminal: the least time between two lines of one loop (its last line always comes)."""


def progress_mode() -> str:
    """``off``, ``lines`` or ``bars``, from ``OVLIFT_PROGRESS`` and whether stderr is a terminal."""
    setting = os.environ.get("OVLIFT_PROGRESS", "1")
    if setting == "0":
        return "off"
    if setting == "lines" or not getattr(sys.stderr, "isatty", lambda: False)():
        return "lines"
    return "bars"


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    mode = progress_mode()
    if mode == "lines":
        return _lines(iterable, desc, total if total is not None else _length(iterable), unit)
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=mode == "off", mininterval=0.5))


def _length(iterable: Iterable) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _lines(iterable: Iterable[T], desc: str, total: int | None, unit: str) -> Iterator[T]:
    start = last = time.monotonic()
    done = shown = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if done == total or now - last >= LINE_INTERVAL_S:
            _line(desc, done, total, unit, now - start)
            last, shown = now, done
    if done != shown:  # fewer items than total, or of unknown length
        _line(desc, done, total, unit, time.monotonic() - start)


def _line(desc: str, done: int, total: int | None, unit: str, elapsed: float) -> None:
    count = f"{done}/{total}" if total is not None else str(done)
    if (total if total is not None else done) != 1:
        unit += "es" if unit.endswith(("s", "tch", "sh", "x")) else "s"
    print(f"{desc}: {count} {unit} ({elapsed:.1f} s)", file=sys.stderr, flush=True)


def quiet_library_bars() -> None:
    """Hugging Face's download and weight-loading bars (tqdm, redrawn with carriage returns)
    only on a terminal, like ours. Call it before transformers is imported: it reads this once."""
    if progress_mode() != "bars":
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
