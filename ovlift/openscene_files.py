"""OpenScene's released files: its fused 2D features (``<scene>_<n>.pt``) and the
per-point features and predictions its evaluation saves, read and written exactly as
OpenScene's code does (``scripts/feature_fusion/fusion_util.py`` ``save_fused_feature``,
``dataset/feature_loader.py``, ``run/evaluate.py``).

A fused-feature file is ``torch.save({"feat": (M, C) float16, "mask_full": (N,) bool})``:
``mask_full`` marks M of the scene's N points (in the order of its ``.pth`` point
cloud) and ``feat`` holds their features in ascending point order. OpenScene writes 5
files per training scene (each a random subset of 20,000 points among those seen, all
from the same fused bank) and 1 per validation scene (every seen point); nuScenes has one
file named ``<scene>.pt``. An older layout adds ``mask`` (indices into the ``mask_full``
points that have a feature, ``feat`` then having a row per ``mask_full`` point); it is read
too. Files are loaded through ``load_array_file`` (``weights_only=True``, NumPy's numeric
array globals only), so a hostile file cannot run code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovlift.atomic_files import write_atomically
from ovlift.datasets.openscene_points import load_array_file
from ovlift.errors import StageInputError


def fused_files(folder: str | os.PathLike[str], scene_id: str) -> list[Path]:
    """A scene's fused-feature files in ``folder``: ``<scene>.pt`` and ``<scene>_<n>.pt``,
    by n. Matched by name, not glob, so ``scene0000_0`` never takes ``scene0000_00``'s."""
    pattern = re.compile(re.escape(scene_id) + r"(?:_(\d+))?\.pt")
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and entry.is_file():
                found.append((-1 if match.group(1) is None else int(match.group(1)), Path(entry.path)))
    return [path for _, path in sorted(found)]


def _tensor(value: Any, name: str, where: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise StageInputError(f"{where}: '{name}' is a {type(value).__name__}, expected a tensor or array")
    return value


def read_fused_file(path: Path, n_points: int, channels: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One file as (point indices (M,) int64 ascending, features (M, C) float16), checked
    against the scene's point count and the expected channels."""
    what = f"{where}, file '{path.name}'"
    data = load_array_file(path, what)
    if not isinstance(data, dict) or not {"feat", "mask_full"} <= set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise StageInputError(f"{what}: expected a dict with 'feat' and 'mask_full' (OpenScene's layout), found {keys}")
    feat = _tensor(data["feat"], "feat", what)
    mask_full = _tensor(data["mask_full"], "mask_full", what)
    if mask_full.ndim != 1 or mask_full.dtype != torch.bool:
        raise StageInputError(f"{what}: 'mask_full' is {mask_full.dtype} {tuple(mask_full.shape)}, expected (N,) bool")
    if len(mask_full) != n_points:
        raise StageInputError(
            f"{what}: 'mask_full' covers {len(mask_full)} points, the scene has {n_points} "
            "(the features belong to another point cloud, or its points were reordered or subsampled)"
        )
    if feat.ndim == 3 and feat.shape[-1] == 1:  # OpenScene's loader accepts (M, C, 1)
        feat = feat[..., 0]
    points = mask_full.nonzero()[:, 0]
    if "mask" in data:  # older layout: a row per mask_full point, 'mask' lists those with a feature
        visible = _tensor(data["mask"], "mask", what).to(torch.int64)
        if (
            feat.ndim != 2
            or len(feat) != len(points)
            or len(visible)
            and (visible.min() < 0 or visible.max() >= len(points))
        ):
            raise StageInputError(f"{what}: 'mask' indexes outside the {len(points)} 'mask_full' points")
        points, feat = points[visible], feat[visible]
    if feat.ndim != 2 or len(feat) != len(points):
        raise StageInputError(
            f"{what}: 'feat' is {tuple(feat.shape)}, expected ({len(points)}, {channels}): "
            "one row per point marked in 'mask_full'"
        )
    if feat.shape[1] != channels:
        raise StageInputError(f"{what}: 'feat' has {feat.shape[1]} channels, the plan says {channels}")
    if not torch.isfinite(feat).all():
        raise StageInputError(f"{what}: 'feat' holds NaN or infinite values")
    return points, feat.to(torch.float16)


def read_fused(paths: list[Path], n_points: int, channels: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The union of several files: (N, C) float16 features, the mean where files overlap
    (OpenScene's files of one scene repeat the same bank, so the mean is that value), and
    (N,) bool seen."""
    total = torch.zeros((n_points, channels), dtype=torch.float32)
    count = torch.zeros(n_points, dtype=torch.int32)
    for path in paths:
        points, feat = read_fused_file(path, n_points, channels, where)
        total.index_add_(0, points, feat.float())
        count.index_add_(0, points, torch.ones(len(points), dtype=torch.int32))
    seen = count > 0
    total[seen] /= count[seen, None]
    return total.to(torch.float16).numpy(), seen.numpy()


def write_fused(path: Path, features: np.ndarray, seen: np.ndarray) -> None:
    """One file in OpenScene's layout holding every seen point (its validation-split form)."""
    mask = torch.from_numpy(np.asarray(seen, dtype=bool))
    feat = torch.from_numpy(np.asarray(features)[mask.numpy()]).to(torch.float16)
    write_atomically(path, lambda tmp: torch.save({"feat": feat, "mask_full": mask}, tmp))
