"""Damaged copies of small valid files and the bounds every reader must keep on them
(tests of the ``.sens`` and PLY readers)."""

import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np


def traced(read: Callable[[], object], error: type[Exception]) -> tuple[int, Exception | None]:
    """The peak bytes Python and numpy allocate while ``read()`` runs, and the ``error`` it raised."""
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1], None
    except error as err:
        return tracemalloc.get_traced_memory()[1], err
    finally:
        tracemalloc.stop()


def damaged(rng: np.random.Generator, data: bytes, sizes_end: int) -> bytes:
    """``data`` cut short (one case in four) or with 1 to 8 bits flipped, half of them in the
    first ``sizes_end`` bytes, where the sizes are."""
    if rng.random() < 0.25:
        return data[: int(rng.integers(0, len(data)))]
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        at = int(rng.integers(0, sizes_end if rng.random() < 0.5 else len(data)))
        out[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def fuzz(
    path: Path,
    data: bytes,
    sizes_end: int,
    read: Callable[[], object],
    error: type[Exception],
    rng: np.random.Generator,
    cases: int = 300,
) -> Counter:
    """Write ``cases`` damaged copies of ``data`` to ``path`` and read each: it reads, or raises
    ``error`` naming the file, within 1 s and 1 MiB. Returns how many did which."""
    outcomes: Counter = Counter()
    for case in range(cases):
        path.write_bytes(damaged(rng, data, sizes_end))
        start = time.perf_counter()
        peak, raised = traced(read, error)
        assert raised is None or path.name in str(raised), f"case {case}: {raised}"
        outcomes["read" if raised is None else error.__name__] += 1
        assert time.perf_counter() - start < 1.0, f"case {case} took {time.perf_counter() - start:.1f} s"
        assert peak < 1 << 20, f"case {case} allocated {peak / 2**20:.1f} MiB"
    return outcomes
