"""OpenScene's preprocessed point clouds, ``<scene>.pth``: ``torch.save((coords, colors, labels))``.

What OpenScene's preprocessing writes (``scripts/preprocess/preprocess_3d_{scannet,
matterport,nuscenes}.py``, ``preprocess_3d_matterport_K_num_classes.py``) and its loaders
read (``dataset/point_loader.py`` ``Point3DLoader.__getitem__``, ``dataset/feature_loader.py``):

- ``coords``: (N, 3) NumPy array of the mesh vertices (ScanNet ``_vh_clean_2.ply``,
  Matterport ``region<N>.ply``) or LiDAR points (nuScenes ``scene.ply``), in metres, in the
  source file's order. float32 from the PLY's floats (float64 is accepted too).
- ``colors``: (N, 3) the PLY's 8-bit RGB as ``rgb / 127.5 - 1``, so in [-1, 1]; the loaders
  undo it with ``(colors + 1) * 127.5``. nuScenes has no colour and stores the integer 0
  (the loaders test ``np.isscalar(feats) and feats == 0``).
- ``labels``: (N,) class indices 0..K-1 with 255 for ignore (float64 from ScanNet's
  ``remapper``, int64 from Matterport's vote, float64 from nuScenes' ``NUSCENES_CLASS_REMAP - 1``);
  the loaders also map -100 to 255.

Files are loaded with ``weights_only=True``: plain tensors and containers, plus NumPy's
array globals (``ARRAY_GLOBALS``: ``_reconstruct``, ``ndarray``, ``dtype`` and the numeric
dtype classes, under both NumPy 1's ``numpy.core`` and NumPy 2's ``numpy._core`` names, as
OpenScene's files were written by NumPy 1). No object arrays, so a hostile file cannot run code.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovlift.cache_schema import IGNORE_LABEL
from ovlift.errors import StageInputError

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]
"""NumPy's ``multiarray._reconstruct``, taken from the pickle protocol so it resolves on NumPy 1 and 2."""
ARRAY_GLOBALS: list[Any] = [
    np.ndarray,
    np.dtype,
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    *sorted({type(np.dtype(code)) for code in "?bBhHiIlLqQefd"}, key=lambda t: t.__name__),
]
"""Globals a torch file of numeric NumPy arrays needs (object arrays stay refused)."""

IGNORE_VALUES = (255, -100)
"""Label values OpenScene ignores: 255 as written, -100 as its loaders also map to 255."""
COLOR_STEP_TOLERANCE = 0.01
"""How far (in 8-bit steps) ``(c + 1) * 127.5`` may lie from an integer: OpenScene's colours
are exactly 8-bit values scaled, so more means another encoding ([0, 1], [0, 255], ...)."""


def load_array_file(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load`` of a file from elsewhere: tensors, containers and numeric NumPy arrays only;
    an unreadable file is a StageInputError naming ``what`` and the file."""
    try:
        with torch.serialization.safe_globals(ARRAY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: file '{path}' not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StageInputError(f"{what}: cannot read '{path}' as a torch file of tensors and arrays: {first}") from None


@dataclass(frozen=True)
class PointCloud:
    points: np.ndarray
    """(N, 3) float32 metres, in the file's order."""
    colors: np.ndarray | None
    """(N, 3) uint8 RGB, or None (nuScenes)."""
    labels: np.ndarray
    """(N,) int16 class index, ``IGNORE_LABEL`` where OpenScene has 255 (or -100)."""


def read_point_file(path: Path, scene_id: str, class_names: tuple[str, ...], label_set: str) -> PointCloud:
    """A ``.pth`` as written by OpenScene's preprocessing, checked; see the module docstring."""
    where = f"scene '{scene_id}': {path}"
    data = load_array_file(path, f"scene '{scene_id}'")
    if not isinstance(data, tuple | list) or len(data) != 3:
        found = f"a {len(data)}-{type(data).__name__}" if isinstance(data, tuple | list) else type(data).__name__
        raise StageInputError(f"{where}: expected OpenScene's tuple (coords, colors, labels), found {found}")
    coords, colors, labels = (_array(v) for v in data)
    if coords.ndim != 2 or coords.shape[1] != 3 or coords.dtype.kind != "f" or not len(coords):
        raise StageInputError(f"{where}: coords expected (N, 3) float metres, found {coords.dtype} {coords.shape}")
    if not np.isfinite(coords).all():
        raise StageInputError(f"{where}: coords hold NaN or infinite values")
    n = len(coords)
    if labels.shape != (n,) or labels.dtype.kind not in "fiu":
        raise StageInputError(
            f"{where}: labels expected ({n},) numbers (one per coordinate row), found {labels.dtype} {labels.shape}"
        )
    return PointCloud(
        coords.astype(np.float32, copy=False),
        _colors(colors, n, where),
        _labels(labels, len(class_names), label_set, where),
    )


def _array(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _colors(colors: np.ndarray, n: int, where: str) -> np.ndarray | None:
    """OpenScene's ``rgb / 127.5 - 1`` back to uint8 (exact: rounding undoes the float error)."""
    if colors.ndim == 0 and colors.dtype.kind in "iuf" and colors == 0:
        return None  # nuScenes: no colour
    if colors.shape != (n, 3) or colors.dtype.kind != "f":
        raise StageInputError(
            f"{where}: colors expected ({n}, 3) floats in [-1, 1] (OpenScene's rgb / 127.5 - 1) or the "
            f"scalar 0 (no colour), found {colors.dtype} {colors.shape}"
        )
    scaled = (colors.astype(np.float64) + 1.0) * 127.5
    rounded = np.rint(scaled)
    bad = ~np.isfinite(scaled) | (rounded < 0) | (rounded > 255) | (np.abs(scaled - rounded) > COLOR_STEP_TOLERANCE)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise StageInputError(
            f"{where}: colors expected 8-bit RGB stored as rgb / 127.5 - 1 (in [-1, 1]), found "
            f"{colors[row].tolist()} at row {row} (range {float(np.nanmin(colors)):g}..{float(np.nanmax(colors)):g})"
        )
    return rounded.astype(np.uint8)


def _labels(labels: np.ndarray, num_classes: int, label_set: str, where: str) -> np.ndarray:
    """Class indices as int16, OpenScene's ignore values as ``IGNORE_LABEL``."""
    values = np.unique(labels)
    ignored = np.isin(values, IGNORE_VALUES)
    bad = values[~ignored & ((values != np.round(values)) | (values < 0) | (values >= num_classes))]
    if len(bad):
        found = [int(v) if math.isfinite(v) and v == round(v) else float(v) for v in bad[:10].tolist()]
        raise StageInputError(
            f"{where}: labels expected {label_set} classes 0..{num_classes - 1} or 255 (ignore), found {found} "
            "(set label_set to the file's: OpenScene's matterport_3d_40/80/160 hold matterport40/80/160)"
        )
    out = np.where(np.isin(labels, IGNORE_VALUES), IGNORE_LABEL, labels)
    return out.astype(np.int16)
