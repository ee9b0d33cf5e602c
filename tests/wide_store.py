"""Many small-but-wide training scenes, written directly (no stages run), and ``distill`` on them
with its peak resident memory measured in a fresh process: for the memory test and for
``benchmarks/scale.py``.

Each scene ``wide_XXXX`` has ``points`` points in an 8 x 4 x 4 m box (the student's four levels
at 0.25 m voxels keep two voxels of one scene alone) and a fused teacher ``t`` with
``channels`` float16 channels on every tenth point, one of 8 random directions per 1 m cell,
0 elsewhere: the store compresses them and is quick to write, in memory they take their full
size, and a step's loss works on a tenth of its points (the data, not the step, dominates).

    python tests/wide_store.py STORE --scenes 24 --points 20000 --channels 512   # write, then measure
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from store_groups import publish_group

from ovlift.cache_schema import GroupMeta, Store
from ovlift.cache_schema.groups.input import INPUT_SPEC
from ovlift.cache_schema.groups.project import PROJECT_SPEC

TEACHER = "t"
TEXT_ENCODER = {"kind": "minilm", "path": None, "templates": "single"}
TINY_STUDENT = {
    "planes": [8, 16, 16, 16, 16, 16, 8, 8],
    "layers": [1] * 8,
    "init_dim": 8,
    "stem_kernel": 3,
    "voxel_size_m": 0.25,
}
"""A tiny student on coarse voxels: what is measured is the data's memory, not the network's."""


def write_wide_store(path: Path, scenes: int, points: int = 20_000, channels: int = 512) -> list[str]:
    """Write the scenes (those already there are kept); their ids."""
    store = Store(path)
    directions = np.random.default_rng(0).standard_normal((8, channels)).astype(np.float16)
    ids = [f"wide_{i:04d}" for i in range(scenes)]
    for i, scene_id in enumerate(ids):
        if store.read(PROJECT_SPEC.path(scene_id)) is not None:
            continue
        xyz = (np.random.default_rng(i).random((points, 3)) * [8, 4, 4]).astype(np.float32)
        arrays = {
            "points": xyz,
            "frames/color": np.zeros((1, 4, 4, 3), np.uint8),
            "frames/intrinsics": np.eye(3, dtype=np.float32)[None],
            "frames/cam_to_world": np.eye(4)[None],
            "frames/pose_valid": np.ones(1, bool),
        }
        info = {"dataset": "wide", "class_names": None, "ignore_label": -1, "frame_names": ["f0"]}
        publish_group(store, INPUT_SPEC, scene_id, arrays, info)
        cell = (xyz[:, 0].astype(np.int64) + 2 * xyz[:, 1].astype(np.int64)) % len(directions)
        seen = np.arange(points) % 10 == 0
        fused = {
            "point_index": np.zeros(1, np.int32),
            "frame_index": np.zeros(1, np.int32),
            "pixel": np.zeros((1, 2), np.int16),
            "view_count": np.ones(points, np.int32),
            f"fused/{TEACHER}/features": np.where(seen[:, None], directions[cell], 0),
            f"fused/{TEACHER}/seen": seen,
        }
        teachers = {TEACHER: {"channels": channels, "text_encoder": TEXT_ENCODER}}
        publish_group(
            store, PROJECT_SPEC, scene_id, fused, {"feature_size": [4, 4], "frames": [0], "teachers": teachers}
        )
    return ids


def distill_peak_memory(
    path: Path,
    scenes: int,
    epochs: int = 1,
    batch_size: int = 2,
    prefetch_steps: int = 0,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict:
    """``distill`` (the openscene stage, cosine loss, a tiny student on the CPU, one torch thread) on
    the first ``scenes`` scenes of the store at ``path`` for ``epochs`` epochs, in a fresh Python
    process, after a warm-up run of one step (what a first step allocates once, whatever the
    scenes: torch's deterministic mode alone takes 150 MB, spconv's first convolution more).
    Returns ``rss_before`` (bytes resident after the warm-up), ``peak`` (the process's peak
    resident bytes from then on: VmHWM, cleared through /proc/self/clear_refs), ``first_peak``
    (the same over the warm-up, from before it), ``feature_bytes`` (the teacher features of
    those scenes) and ``steps``. ``env``: more environment variables of that process. Compare
    numbers of scenes at one number of steps (``epochs``): glibc's heap keeps freed blocks for
    reuse, so resident memory creeps up over the first few dozen steps, whatever the scenes."""
    command = [sys.executable, __file__, str(path), "--scenes", str(scenes), "--measure"]
    command += ["--epochs", str(epochs), "--batch-size", str(batch_size), "--prefetch-steps", str(prefetch_steps)]
    environment = {**os.environ, **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=environment)
    if done.returncode != 0:
        raise RuntimeError(f"distill on {scenes} wide scenes failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _status_bytes(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # kB


def _measure(path: Path, scenes: int, epochs: int, batch_size: int, prefetch_steps: int, files: Path) -> dict:
    import logging

    import torch

    import ovlift.models.training  # (spconv's libraries: resident before the stage starts)
    import ovlift.plots  # noqa: F401  (matplotlib, for the training curves)
    from ovlift.stages.base import StageContext
    from ovlift.stages.distill import DistillConfig, DistillStage

    torch.set_num_threads(1)
    store = Store(path)
    ids = [f"wide_{i:04d}" for i in range(scenes)]
    inputs = {s: {"input": store.read(INPUT_SPEC.path(s)), "project": store.read(PROJECT_SPEC.path(s))} for s in ids}

    def run(scene_ids: list[str], epochs: int, folder: Path) -> None:
        config = DistillConfig(
            student=TINY_STUDENT, epochs=epochs, batch_size=batch_size, prefetch_steps=prefetch_steps, device="cpu"
        )
        stage = DistillStage(config)
        read = {s: inputs[s] for s in scene_ids}
        ctx = StageContext(None, {}, None, "cpu", logging.getLogger("ovlift"), scene_inputs=read, files=folder)
        meta = GroupMeta("distill", "openscene", stage.version, config.normalised(), {}, folder.name, {})
        with store.writer("global/distill", stage.spec, meta, "distill") as out:
            stage.run(ctx, out)

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    run(ids[:batch_size], 1, files / "warm-up")
    first_peak = _status_bytes("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_bytes("VmRSS")
    run(ids, epochs, files / "measured")
    features = sum(g["project"].array(f"fused/{TEACHER}/features").nbytes for g in inputs.values())
    steps = epochs * -(-scenes // batch_size)
    return {
        "rss_before": before,
        "peak": _status_bytes("VmHWM"),
        "first_peak": first_peak,
        "feature_bytes": features,
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--prefetch-steps", type=int, default=0)
    parser.add_argument("--measure", action="store_true", help="only measure (the store is written)")
    args = parser.parse_args()
    if not args.measure:
        write_wide_store(args.store, args.scenes, args.points, args.channels)
        print(
            json.dumps(distill_peak_memory(args.store, args.scenes, args.epochs, args.batch_size, args.prefetch_steps))
        )
        return
    import tempfile

    with tempfile.TemporaryDirectory() as files:
        measured = _measure(args.store, args.scenes, args.epochs, args.batch_size, args.prefetch_steps, Path(files))
    print(json.dumps(measured))


if __name__ == "__main__":
    main()
