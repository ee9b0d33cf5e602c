"""Many small-but-wide training scenes, written directly (no stages run), and ``distill`` on them
with its peak resident memory measured in a fresh process: for the memory test and for
``benchmarks/scale.py``.

Each scene ``wide_XXXX`` has ``points`` points in a 4 m box and a fused teacher ``t`` with
``channels`` float16 channels, one of 8 random directions per 1 m cell (rows repeat, so the
store compresses them and is quick to write; in memory they take their full size).

    python tests/wide_store.py STORE --scenes 24 --points 20000 --channels 512   # write, then measure
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

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
    "voxel_size_m": 0.1,
}


def _publish(store: Store, spec, scene_id: str, arrays: dict, info: dict) -> None:
    path = spec.path(scene_id)
    meta = GroupMeta(spec.stage, "test", "1", {}, {}, f"{path}-fp", {})
    with store.writer(path, spec, meta, path) as out:
        for name, value in arrays.items():
            out.write(name, value)
        out.set_info(**info)


def write_wide_store(path: Path, scenes: int, points: int = 20_000, channels: int = 512) -> list[str]:
    """Write the scenes (those already there are kept); their ids."""
    store = Store(path)
    directions = np.random.default_rng(0).standard_normal((8, channels)).astype(np.float16)
    ids = [f"wide_{i:04d}" for i in range(scenes)]
    for i, scene_id in enumerate(ids):
        if store.read(PROJECT_SPEC.path(scene_id)) is not None:
            continue
        xyz = np.random.default_rng(i).uniform(0, 4, (points, 3)).astype(np.float32)
        arrays = {
            "points": xyz,
            "frames/color": np.zeros((1, 4, 4, 3), np.uint8),
            "frames/intrinsics": np.eye(3, dtype=np.float32)[None],
            "frames/cam_to_world": np.eye(4)[None],
            "frames/pose_valid": np.ones(1, bool),
        }
        info = {"dataset": "wide", "class_names": None, "ignore_label": -1, "frame_names": ["f0"]}
        _publish(store, INPUT_SPEC, scene_id, arrays, info)
        cell = (xyz[:, 0].astype(np.int64) + 2 * xyz[:, 1].astype(np.int64)) % len(directions)
        fused = {
            "point_index": np.zeros(1, np.int32),
            "frame_index": np.zeros(1, np.int32),
            "pixel": np.zeros((1, 2), np.int16),
            "view_count": np.ones(points, np.int32),
            f"fused/{TEACHER}/features": directions[cell],
            f"fused/{TEACHER}/seen": np.ones(points, bool),
        }
        teachers = {TEACHER: {"channels": channels, "text_encoder": TEXT_ENCODER}}
        _publish(store, PROJECT_SPEC, scene_id, fused, {"feature_size": [4, 4], "frames": [0], "teachers": teachers})
    return ids


def distill_peak_memory(
    path: Path, scenes: int, epochs: int = 1, batch_size: int = 2, prefetch_steps: int = 0, timeout: float = 600
) -> dict:
    """``distill`` (the openscene stage, cosine loss, a tiny student on the CPU) on the first
    ``scenes`` scenes of the store at ``path`` for ``epochs`` epochs, in a fresh Python process;
    what it measured: ``rss_before`` (bytes resident when the stage starts), ``peak`` (the
    process's peak resident bytes from then on: VmHWM after clearing it through
    /proc/self/clear_refs), ``feature_bytes`` (the teacher features of those scenes), ``steps``."""
    command = [sys.executable, __file__, str(path), "--scenes", str(scenes), "--measure"]
    command += ["--epochs", str(epochs), "--batch-size", str(batch_size), "--prefetch-steps", str(prefetch_steps)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"distill on {scenes} wide scenes failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def _measure(path: Path, scenes: int, epochs: int, batch_size: int, prefetch_steps: int, files: Path) -> dict:
    import logging

    import torch

    from ovlift.stages.base import StageContext
    from ovlift.stages.distill import DistillConfig, DistillStage

    torch.set_num_threads(1)
    store = Store(path)
    ids = [f"wide_{i:04d}" for i in range(scenes)]
    inputs = {s: {"input": store.read(INPUT_SPEC.path(s)), "project": store.read(PROJECT_SPEC.path(s))} for s in ids}
    config = DistillConfig(
        student=TINY_STUDENT, epochs=epochs, batch_size=batch_size, prefetch_steps=prefetch_steps, device="cpu"
    )
    stage = DistillStage(config)
    ctx = StageContext(None, {}, None, "cpu", logging.getLogger("ovlift"), scene_inputs=inputs, files=files)  # type: ignore[arg-type]
    meta = GroupMeta("distill", "openscene", stage.version, config.normalised(), {}, f"wide-{scenes}-{epochs}", {})
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS") * 1024
    with store.writer("global/distill", stage.spec, meta, "distill") as out:
        stage.run(ctx, out)
    features = sum(g["project"].array(f"fused/{TEACHER}/features").nbytes for g in inputs.values())
    steps = epochs * -(-scenes // batch_size)
    return {"rss_before": before, "peak": _status_kib("VmHWM") * 1024, "feature_bytes": features, "steps": steps}


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
        print(json.dumps(distill_peak_memory(args.store, args.scenes, args.epochs, args.batch_size, args.prefetch_steps)))
        return
    import tempfile

    with tempfile.TemporaryDirectory() as files:
        measured = _measure(args.store, args.scenes, args.epochs, args.batch_size, args.prefetch_steps, Path(files))
    print(json.dumps(measured))


if __name__ == "__main__":
    main()
