"""Array specs: what each stage may write, checked at write time.

A spec names an array, its dtype, its shape in named dimensions and its chunking.
Named dimensions (``N`` points, ``T`` frames, ...) must agree across all arrays of
one group; integer dimensions are fixed sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from ovlift.cache_schema.integrity import CODEC_CHAINS
from ovlift.names import check_name

IGNORE_LABEL = -1
"""Label value of points and pixels without a class (ScanNet's "unannotated")."""

Dim = str | int

SCENES = "scenes"
"""Top-level group of the per-scene groups."""
GLOBAL = "global"
"""Top-level group of the global groups (results over the scenes of a split)."""


class SchemaError(ValueError):
    """An array or group does not match its spec. The message names where and what."""


class Scope(StrEnum):
    """Where a stage's groups live: one per scene, or one over the scenes of a split."""

    SCENE = "scene"
    """``scenes/<scene_id>/<stage>[/<variant>]``"""
    GLOBAL = "global"
    """``global/<stage>[/<variant>]``"""


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
    codec: str = "zstd"
    """Its chunks' compressors (``integrity.CODEC_CHAINS``): ``zstd``, or ``shuffled-zstd``
    for integer images."""

    def __post_init__(self) -> None:
        if len(self.chunks) != len(self.dims):
            raise ValueError(f"spec {self.name}: chunks {self.chunks} do not match dims {self.dims}")
        if self.codec not in CODEC_CHAINS:
            raise ValueError(f"spec {self.name}: codec '{self.codec}' is not one of {sorted(CODEC_CHAINS)}")
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
    """The outputs of one stage: where they live, their arrays and the attrs they record.

    The one place that says a stage's name, scope and whether it has variants;
    ``Stage`` derives them from here, and ``path`` is the only way to a group's path.
    """

    stage: str
    """Stage name: a path level, and how plans and ``reads`` refer to the stage."""
    doc: str
    arrays: tuple[ArraySpec, ...]
    info: dict[str, str] = field(default_factory=dict)
    """Stage-specific entries of the group's ``info`` attr, name -> meaning."""
    variant: str | None = None
    """What the ``<variant>`` path level names, for stages written once per variant."""
    scope: Scope = Scope.SCENE
    """One group per scene, or one global group."""

    def __post_init__(self) -> None:
        names = [a.name for a in self.arrays]
        if len(set(names)) != len(names):
            raise ValueError(f"group spec {self.stage}: duplicate array names {names}")

    def check_variant(self, variant: str | None) -> None:
        """Raise ValueError unless ``variant`` is given exactly when the stage has variants."""
        if (variant is None) != (self.variant is None):
            need = f"a <{self.variant}> name" if self.variant else "no variant"
            raise ValueError(f"stage '{self.stage}' needs {need}, got variant {variant!r}")

    def path(self, scene_id: str | None = None, variant: str | None = None) -> str:
        """The group's path in the store: ``scenes/<scene_id>/<stage>[/<variant>]`` or
        ``global/<stage>[/<variant>]``."""
        self.check_variant(variant)
        if (scene_id is None) != (self.scope is Scope.GLOBAL):
            need = "no scene" if self.scope is Scope.GLOBAL else "a scene id"
            raise ValueError(f"{self.scope} stage '{self.stage}' needs {need}, got scene {scene_id!r}")
        if scene_id is not None:
            check_name(scene_id, "scene id")
        if variant is not None:
            check_name(variant, f"variant of stage '{self.stage}'")
        return self._join(scene_id, variant)

    def _join(self, scene_id: str | None, variant: str | None) -> str:
        head = f"{SCENES}/{scene_id}" if scene_id is not None else GLOBAL
        return f"{head}/{self.stage}" + (f"/{variant}" if variant is not None else "")

    def path_pattern(self) -> str:
        """``path`` with placeholders, as documents show it."""
        return self._join(None if self.scope is Scope.GLOBAL else "<scene_id>", self.variant and f"<{self.variant}>")

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
