"""The CPU's projection, fusion and merge loops in C++ (``native.cpp``), compiled on first use.

Why C++: on the CPU these loops are memory-bound and torch ops cannot fuse them. As torch
ops, the projection streamed some forty (frames, points) float64 intermediates through
memory per batch; the fusion converted each gathered float16 row to float32 and added it
in torch-scatter's serial loop; the merge sorted and searched every batch. Measured on the
7-Scenes kitchen (every 5th frame, one thread, a loaded 2-core machine), the C++ loops take
the projection from 23 to 3-4 ms a frame, the fusion from about 1,150 to 280-400 ns a
correspondence and the merge from 170 to 25, with bit-identical results. The best
torch-only fusion we found (views sorted by point, gathered and converted in 4096-row
chunks, then ``index_add_``) was within 15% of the old one: ``index_add_`` dispatches once
per row, and a float32 += float16 add is not vectorised (three times a float32 one).

Why compiled at run time: the build needs only what ``make setup`` already needs for
torch-scatter (a C++ compiler, ninja), and ``make setup`` does it: torch's extension cache
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) keeps the build, so a
machine compiles it once (about a minute on two cores), and again only when ``native.cpp``
changes. Where it cannot be built, ovlift warns once and runs the torch ops, which give the
same results, slower; ``OVLIFT_NATIVE=0`` asks for them. CUDA tensors always take the torch
ops.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("native.cpp")
FOLD_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
"""Feature dtypes ``fold_rows`` reads directly (others are converted to float32 rows first)."""

log = logging.getLogger("ovlift")


@functools.cache
def _loaded() -> bool:
    if os.environ.get("OVLIFT_NATIVE", "1") == "0":
        return False
    quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found": not needed here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)
    log.info("loading ovlift's C++ CPU kernels (the first time on a machine compiles them, about a minute)")
    venv_bin = Path(sys.executable).parent  # make setup's ninja, when the venv is not activated
    if shutil.which("ninja") is None and (venv_bin / "ninja").exists():
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        cpp_extension.load(
            "ovlift_native",
            [str(SOURCE)],
            # -ffp-contract=off: no fused multiply-add, float64 rounded as the torch ops round it;
            # -fopenmp: at::parallel_for is OpenMP pragmas in torch's headers (the process's libgomp, torch's)
            extra_cflags=["-O3", "-ffp-contract=off", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except (RuntimeError, OSError, ImportError, subprocess.SubprocessError) as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        errors = [line for line in lines if "error:" in line] or lines  # the compiler's, not the whole log
        why = errors[0]
        warnings.warn(
            f"ovlift: the C++ CPU kernels could not be built ({why.strip()}); projection and fusion run as "
            "torch ops (same results, several times slower)",
            stacklevel=3,
        )
        return False
    return True


def available(device: torch.device | str) -> bool:
    """Whether tensors on ``device`` take the C++ kernels (CPU, built, not switched off)."""
    return torch.device(device).type == "cpu" and _loaded()


def visible_pairs(
    points: torch.Tensor,
    world_to_cam: torch.Tensor,
    intrinsics: torch.Tensor,
    image_hw: tuple[int, int],
    cut_bound: int,
    depth: torch.Tensor | None,
    depth_camera: tuple[torch.Tensor, torch.Tensor] | None,
    tolerance: float,
    relative: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M,) point, (M,) frame and (M, 2) (row, col) int64 of the visible pairs, by point, frames
    ascending within a point: ``projection.visible_correspondences``'s rules (its depth image, if
    any, already made)."""

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.float64).contiguous()

    if depth is not None and depth.dtype == torch.float32:
        depth = depth.contiguous()  # read as float32 (half the cache of float64)
    elif depth is not None:
        depth = f64(depth)

    return torch.ops.ovlift.visible_pairs(
        f64(points),
        f64(world_to_cam),
        f64(intrinsics),
        image_hw[0],
        image_hw[1],
        cut_bound,
        depth,
        None if depth_camera is None else f64(depth_camera[0]),
        None if depth_camera is None else f64(depth_camera[1]),
        tolerance,
        relative,
    )


def fold_rows(accumulator: torch.Tensor, table: torch.Tensor, point: torch.Tensor, row: torch.Tensor, reduce: str):
    """accumulator[point[i]] = op(accumulator[point[i]], table[row[i]]) for each i in order, op
    the sum or the maximum; ``point`` sorted, so that each row is one worker's."""
    torch.ops.ovlift.fold_rows(accumulator, table.contiguous(), point.contiguous(), row.contiguous(), reduce == "max")


def place_by_point(
    cursor: torch.Tensor,
    point: torch.Tensor,
    frame: torch.Tensor,
    pixel: torch.Tensor,
    frame_out: torch.Tensor,
    pixel_out: torch.Tensor,
) -> None:
    """For each i in order: d = cursor[point[i]]; frame_out[d], pixel_out[d] = frame[i], pixel[i];
    cursor[point[i]] += 1 (the placing pass of a counting sort by point, stable)."""
    torch.ops.ovlift.place_by_point(
        cursor, point.to(torch.int64).contiguous(), frame.contiguous(), pixel.contiguous(), frame_out, pixel_out
    )
