"""Training scenes read a step at a time: the scenes by index, and a background reader.

Distillation never holds a split's scenes at once (ScanNet's training features alone are
180-280 GB): each step reads its own scenes (under DDP, this rank's share), and
``prefetched`` reads the next steps' while this one trains. Nothing here imports spconv.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
S = TypeVar("S")
K = TypeVar("K")


class SceneSource(Protocol[T_co]):
    """Scenes by index: a list in memory, or scenes read from the store when indexed."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> T_co: ...


@dataclass(frozen=True)
class MappedScenes(Generic[S, T]):
    """``source``'s scene ``index`` turned into what training takes by ``prepare``, when indexed."""

    source: SceneSource[S]
    prepare: Callable[[S], T]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> T:
        return self.prepare(self.source[index])


def prefetched(load: Callable[[K], T], keys: Iterable[K], ahead: int) -> Iterator[T]:
    """``load(key)`` for each key in order; with ``ahead`` > 0 one background thread loads up to
    ``ahead`` further keys while the caller works on the current one (0: each when asked).

    A thread, not DataLoader worker processes: a store's Zarr groups and fsspec file systems
    need not survive a fork, nothing is pickled, and the caller holds at most ``ahead`` + 1
    loads (a caller that keeps no reference to the previous one). Use it in ``closing(...)``:
    leaving early cancels what is queued. Loading must depend on the key alone: results are
    then those of loading in order, whatever ``ahead`` is.
    """
    if ahead < 1:
        yield from map(load, keys)
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="ovlift-prefetch")
    pending: deque[Future[T]] = deque()
    try:
        for key in keys:
            pending.append(pool.submit(load, key))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
