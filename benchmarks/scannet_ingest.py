"""Ingest of a ScanNet-sized scene: memory stays flat and time grows linearly with frames.

    .venv/bin/python benchmarks/scannet_ingest.py [--frames 500 2000] [--stride 20] [--dir /tmp/x]

Writes synthetic scenes with the test writer (``tests/scannet_layout.py``): a 150k-vertex
mesh and a ``.sens`` of 1296x968 JPEG colour and 640x480 zlib depth per frame (a
pool of eight distinct frames, re-posed, so writing is quick), then runs the
``input`` stage through the Runner on each in a fresh process and reports wall time,
the process's peak RSS, store bytes per ingested frame, and the time ratio between
the largest and the smallest scene. Deletes its files afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COLOR_HW, DEPTH_HW = (968, 1296), (480, 640)
SCENE = "scene0999_00"


def write_scene(folder: Path, num_frames: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from scannet_layout import frame_record, sens_header, write_scannet_ply

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    side = 388  # 388^2 ~ 150k vertices: a wavy sheet 4 m across
    u, v = np.meshgrid(np.linspace(-2, 2, side), np.linspace(-2, 2, side))
    points = np.stack([u, v, 0.1 * np.sin(3 * u) * np.cos(2 * v)], -1).reshape(-1, 3)
    idx = np.arange(side * side).reshape(side, side)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    colors = rng.integers(0, 256, (len(points), 3), dtype=np.uint8)
    write_scannet_ply(folder / f"{SCENE}_vh_clean_2.ply", points, colors, faces)

    color_k = np.array([[1170.0, 0, 648], [0, 1170, 484], [0, 0, 1]])
    depth_k = np.array([[577.0, 0, 320], [0, 577, 240], [0, 0, 1]])
    yy, xx = np.mgrid[: COLOR_HW[0], : COLOR_HW[1]]
    pool = []
    for k in range(8):  # photo-like: smooth shading plus sensor noise (ScanNet's JPEGs are ~100-200 kB)
        base = 128 + 60 * np.sin(xx / (90 + 7 * k))[..., None] * np.cos(yy[..., None] / 70 + np.arange(3))
        color = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
        depth = 2.0 + 0.5 * np.sin(np.arange(DEPTH_HW[1]) / 50 + k)[None] + rng.normal(0, 0.004, DEPTH_HW)
        pool.append(frame_record(np.eye(4), k, color, depth, jpeg_quality=90)[64:])
    with (folder / f"{SCENE}.sens").open("wb") as f:
        f.write(sens_header(color_k, depth_k, np.eye(4), num_frames, COLOR_HW, DEPTH_HW))
        for i in range(num_frames):
            pose = np.eye(4, dtype=np.float32)
            pose[:3, 3] = (0.002 * i, 0.0, -2.5)
            f.write(pose.tobytes() + pool[i % len(pool)])


def ingest(folder: Path, store: Path, stride: int) -> dict:
    """Runs in a fresh process (so its peak RSS is this ingest's alone)."""
    from ovlift.pipeline.plan import plan_from_dict
    from ovlift.pipeline.runner import Runner

    plan = plan_from_dict(
        {
            "store": str(store),
            "dataset": {"name": "scannet", "paths": [str(folder)], "frame_stride": stride},
            "stages": {"input": {}},
        }
    )
    start = time.perf_counter()
    Runner(plan).run(fail_fast=True)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store_bytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    return {"wall_s": wall, "peak_rss_gib": peak_kib / 2**20, "store_bytes": store_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--stride", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--ingest", nargs=2, help=argparse.SUPPRESS)  # child mode: FOLDER STORE
    args = parser.parse_args()
    if args.ingest:
        print(json.dumps(ingest(Path(args.ingest[0]), Path(args.ingest[1]), args.stride)))
        return
    work = Path(tempfile.mkdtemp(prefix="scannet-ingest-", dir=args.dir))
    rows = []
    try:
        for n in args.frames:
            folder = work / f"n{n}" / SCENE
            start = time.perf_counter()
            write_scene(folder, n)
            written = time.perf_counter() - start
            os.sync()  # else the kernel flushes the fresh .sens during the ingest and slows its writes
            sens_bytes = (folder / f"{SCENE}.sens").stat().st_size
            cmd = [sys.executable, __file__, "--stride", str(args.stride), "--ingest", str(folder), str(work / f"s{n}")]
            env = os.environ | {"PYTHONPATH": str(ROOT), "OVLIFT_PROGRESS": "0"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            kept = len(range(0, n, args.stride))
            row.update(frames=n, ingested=kept, sens_mb=sens_bytes / 1e6, write_s=written)
            row["store_bytes_per_frame"] = row["store_bytes"] / kept
            rows.append(row)
            print(
                f"{n} frames ({kept} ingested, stride {args.stride}, .sens {row['sens_mb']:.0f} MB): "
                f"ingest {row['wall_s']:.1f} s, peak RSS {row['peak_rss_gib']:.2f} GiB, "
                f"store {row['store_bytes_per_frame'] / 1e6:.2f} MB per ingested frame",
                flush=True,
            )
            shutil.rmtree(work / f"n{n}")
            shutil.rmtree(work / f"s{n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(rows) > 1:
        ratio = rows[-1]["wall_s"] / rows[0]["wall_s"]
        linear = rows[-1]["frames"] / rows[0]["frames"]
        per_frame = (rows[-1]["wall_s"] - rows[0]["wall_s"]) / (rows[-1]["ingested"] - rows[0]["ingested"])
        fixed = rows[0]["wall_s"] - per_frame * rows[0]["ingested"]
        print(
            f"time ratio {rows[-1]['frames']}/{rows[0]['frames']} frames: {ratio:.2f} (frames: {linear:.2f}); "
            f"{per_frame:.3f} s per ingested frame + {fixed:.1f} s per scene (mesh, index, fingerprint)"
        )


if __name__ == "__main__":
    main()
