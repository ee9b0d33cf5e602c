"""Array specs: what each stage may write, checked at write time.

A spec names an array, its dtype, its shape in named dimensions and its chunking.
Named dimensions (``N`` points, ``T`` frames, ...) must agree across all arrays of
one group; integer dimensions are fixed sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

IGNORE_LABEL = -1
"""Label value of points and pixels without a class (ScanNet's "unannotated")."""

Dim = str | int


class SchemaError(ValueError):
    """An array or group does not match its spec. The message names where and what."""


@dataclass(frozen=True)
class ArraySpec:
    name: str
    """Path inside the stage group, e.g. ``points`` or ``frames/color``."""
    dtype: str
    """NumPy dtype name; written arrays must have exactly this dtype."""
    dims: tuple[Dim, ...]
    """Shape in named (shared within the group) or fixed (int) dimensions."""
    chunks: tuple[int | None, ...]
    """Chunk length per dimension; ``None`` means the whole dimension."""
    doc: str
    """One line: what the array holds, with units."""
    required: bool = True
    """Whether every group of this stage has the array."""

    def __post_init__(self) -> None:
        if len(self.chunks) != len(self.dims):
            raise ValueError(f"spec {self.name}: chunks {self.chunks} do not match dims {self.dims}")
        np.dtype(self.dtype)  # fails early on a typo

    def check(self, shape: tuple[int, ...], dtype: np.dtype, dims: dict[str, int], where: str) -> None:
        """Raise SchemaError unless (shape, dtype) fits; record newly seen named dims."""
        if np.dtype(dtype) != np.dtype(self.dtype):
            raise SchemaError(f"{where}: array '{self.name}' expected dtype {self.dtype}, found {np.dtype(dtype)}")
        if len(shape) != len(self.dims):
            raise SchemaError(f"{where}: array '{self.name}' expected shape {self.shape_text()}, found {tuple(shape)}")
        for axis, (dim, size) in enumerate(zip(self.dims, shape)):
            if isinstance(dim, int):
                if size != dim:
                    raise SchemaError(
                        f"{where}: array '{self.name}' expected shape {self.shape_text()}, "
                        f"found {tuple(shape)} (axis {axis} must be {dim})"
                    )
            elif dims.setdefault(dim, size) != size:
                raise SchemaError(
                    f"{where}: array '{self.name}' has {dim}={size} on axis {axis}, "
                    f"but another array of the group has {dim}={dims[dim]}"
                )

    @property
    def is_pattern(self) -> bool:
        """Whether the name holds placeholders, e.g. ``fused/{teacher}/features``."""
        return "{" in self.name

    def match(self, name: str) -> ArraySpec | None:
        """This spec made concrete for ``name`` (placeholders filled in dims too), or None."""
        if not self.is_pattern:
            return self if name == self.name else None
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[A-Za-z0-9_.-]+)", re.escape(self.name))
        found = re.fullmatch(regex, name)
        if found is None:
            return None
        values = found.groupdict()
        dims = tuple(d.format(**values) if isinstance(d, str) else d for d in self.dims)
        return replace(self, name=name, dims=dims)

    def chunk_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(max(1, min(s, c)) if c is not None else max(1, s) for s, c in zip(shape, self.chunks))

    def shape_text(self) -> str:
        return "(" + ", ".join(str(d) for d in self.dims) + ("," if len(self.dims) == 1 else "") + ")"


@dataclass(frozen=True)
class GroupSpec:
    """The outputs of one stage: its arrays and the stage-specific attrs it records."""

    stage: str
    doc: str
    arrays: tuple[ArraySpec, ...]
    info: dict[str, str] = field(default_factory=dict)
    """Stage-specific entries of the group's ``info`` attr, name -> meaning."""
    variant: str | None = None
    """What the ``<variant>`` path level names, for stages written once per variant."""

    def __post_init__(self) -> None:
        names = [a.name for a in self.arrays]
        if len(set(names)) != len(names):
            raise ValueError(f"group spec {self.stage}: duplicate array names {names}")

    def array(self, name: str) -> ArraySpec:
        for spec in self.arrays:
            concrete = spec.match(name)
            if concrete is not None:
                return concrete
        raise SchemaError(
            f"stage '{self.stage}' declares no array '{name}'; it declares {[a.name for a in self.arrays]}"
        )

    def check_complete(self, written: set[str], where: str) -> None:
        missing = [a.name for a in self.arrays if a.required and not a.is_pattern and a.name not in written]
        if missing:
            raise SchemaError(f"{where}: required arrays not written: {missing}")
