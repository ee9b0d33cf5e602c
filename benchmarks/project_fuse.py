"""Benchmark: projection + occlusion test + fusion of 2D features onto points.

Measures ovlift's kernels (``project_and_fuse``: on the CPU the C++ loops of
``ovlift/kernels/native.cpp`` - each point projected once per frame, each frame
batch's views folded point by point into the float32 accumulator, the batches
merged by point with a counting sort; on CUDA torch ops) against a baseline
measured in the same run: a NumPy port of the per-frame loop of OpenScene's
fusion scripts (``scripts/feature_fusion``: per frame, the mapping of all N
points, the features of all N mapped pixels gathered from a channel-first map,
masked accumulation). Both apply the same rule (rounded pixel, cut_bound 10,
relative depth tolerance 0.25) to the same inputs and must produce the same view
counts and fused features; the script checks that.

Beside the ratio it prints the kernel's gather rate: the bytes of 2D feature rows
it reads, C x 2 (float16) bytes per correspondence, over its seconds. That is the
least the fusion must move; the float32 accumulator's rows (read and written once
per point and frame batch, 4 C bytes each way) and the projection come on top, so
the rate is a floor on the memory traffic, not all of it.

Workloads:
  * the 500 real 7-Scenes kitchen frames (points built by the rgbd-folder
    reader), 2D features C=512 float16 at 240x320 (the images are 480x640:
    intrinsics rescaled, depth resized);
  * toy scenes of growing point count and growing frame count.

Features are random float16 maps held in memory (a pool of ``--pool`` frames
reused cyclically), so neither side pays for reading them. Each measurement runs
in its own subprocess so that its peak resident memory is its own.

    .venv/bin/python benchmarks/project_fuse.py                 # everything (~8 min on 2 cores)
    .venv/bin/python benchmarks/project_fuse.py --frame-stride 5 --skip-toy   # quicker
    .venv/bin/python benchmarks/project_fuse.py --device cuda   # kernel on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SEVEN_SCENES = REPO.parent / "shared" / "data" / "7scenes-redkitchen"
CUT_BOUND, TOLERANCE = 10, 0.25


# -- the two methods (run inside a worker process) --------------------------------


def run_kernel(inputs: dict, channels: int, pool: int, device: str) -> dict:
    from ovlift.kernels import native
    from ovlift.kernels.fusion import DenseFeatures, FeatureFusion, FrameBatch, TeacherBatch, project_and_fuse
    from ovlift.kernels.projection import VisibilityRule

    dev = torch.device(device)
    points = inputs["points"].to(dev)
    depth = inputs["depth"].to(dev)
    w2c, k = inputs["world_to_cam"].to(dev), inputs["intrinsics"].to(dev)
    features = feature_pool(pool, inputs["hw"], channels, channels_first=False).to(dev)
    num_frames = len(w2c)
    native.available(dev)  # the C++ kernels: compiled once per machine, loaded before the clock starts
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    setup_mb = reset_peak_rss()
    start = time.perf_counter()
    fusion = FeatureFusion(len(points), channels, device=dev)

    def batches():  # frame i uses pool[i % pool]: a batch of `pool` frames is the pool itself, no copy
        for s in range(0, num_frames, pool):
            frames = torch.arange(s, min(s + pool, num_frames), device=dev)
            teacher = TeacherBatch(DenseFeatures(features[: len(frames)]), torch.arange(len(frames), device=dev))
            yield FrameBatch(frames, w2c[frames], k[frames], depth[frames], {"bench": teacher})

    rule = VisibilityRule(TOLERANCE, "relative", CUT_BOUND)
    corr, _ = project_and_fuse(points, batches(), inputs["hw"], rule, {"bench": fusion})
    fused, count = fusion.result()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = summary(fused.cpu().numpy(), count.cpu().numpy(), len(corr), seconds, status_mb("VmHWM"))
    out["setup_rss_mb"] = setup_mb
    if dev.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_baseline(inputs: dict, channels: int, pool: int) -> dict:
    """OpenScene's per-frame loop (scripts/feature_fusion/*_openseg.py), in NumPy."""
    points = inputs["points"].numpy().astype(np.float64)
    depth = inputs["depth"].numpy()
    w2c, k = inputs["world_to_cam"].numpy(), inputs["intrinsics"].numpy()
    height, width = inputs["hw"]
    features = feature_pool(pool, inputs["hw"], channels, channels_first=True).numpy()  # (P, C, h, w)
    n = len(points)
    setup_mb = reset_peak_rss()
    start = time.perf_counter()
    counter = np.zeros(n, np.int64)
    sum_features = np.zeros((n, channels), np.float32)
    coords = np.concatenate([points, np.ones((n, 1))], axis=1).T
    correspondences = 0
    for i in range(len(w2c)):
        # PointCloudToImageMapper.compute_mapping
        p = w2c[i] @ coords
        p[0] = (p[0] * k[i, 0, 0]) / p[2] + k[i, 0, 2]
        p[1] = (p[1] * k[i, 1, 1]) / p[2] + k[i, 1, 2]
        pi = np.round(p).astype(int)
        inside = (
            (pi[0] >= CUT_BOUND) & (pi[1] >= CUT_BOUND) & (pi[0] < width - CUT_BOUND) & (pi[1] < height - CUT_BOUND)
        )
        d = depth[i][pi[1][inside], pi[0][inside]]
        inside[inside] = np.abs(d - p[2][inside]) <= TOLERANCE * d
        mapping = np.zeros((n, 3), dtype=int)
        mapping[inside, 0], mapping[inside, 1], mapping[inside, 2] = pi[1][inside], pi[0][inside], 1
        # the fusion loop body
        feat_2d_3d = features[i % pool][:, mapping[:, 0], mapping[:, 1]].T
        mask = mapping[:, 2] != 0
        counter[mask] += 1
        sum_features[mask] += feat_2d_3d[mask]
        correspondences += int(mask.sum())
    sum_features /= np.maximum(counter, 1)[:, None]
    seconds = time.perf_counter() - start
    return {**summary(sum_features, counter, correspondences, seconds, status_mb("VmHWM")), "setup_rss_mb": setup_mb}


def feature_pool(pool: int, hw: tuple[int, int], channels: int, channels_first: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(pool, *hw, channels, generator=gen, dtype=torch.float16)
    return feats.permute(0, 3, 1, 2).contiguous() if channels_first else feats


def summary(fused: np.ndarray, count: np.ndarray, correspondences: int, seconds: float, peak_mb: float) -> dict:
    return {
        "seconds": seconds,
        "correspondences": correspondences,
        "peak_rss_mb": peak_mb,
        "count": count.astype(np.int64).tolist(),
        "fused_sample": fused[:: max(1, len(fused) // 200)].astype(np.float64).tolist(),
    }


def worker(args: argparse.Namespace) -> None:
    """One method, ``--repeat`` times: the fastest run, and the largest peak."""
    inputs = torch.load(args.inputs, weights_only=True)
    runs = []
    for _ in range(args.repeat):
        if args.worker == "kernel":
            runs.append(run_kernel(inputs, args.channels, args.pool, args.device))
        else:
            runs.append(run_baseline(inputs, args.channels, args.pool))
    result = min(runs, key=lambda r: r["seconds"])
    result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    print(json.dumps(result))


def reset_peak_rss() -> float:
    """Restart the kernel's peak-RSS counter (Linux), so that VmHWM covers only
    what follows; returns the resident memory now (inputs, features, libraries)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_mb("VmRSS")


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- orchestration ------------------------------------------------------------------


def measure(method: str, inputs_path: str, args: argparse.Namespace, repeat: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--inputs",
        inputs_path,
        "--channels",
        str(args.channels),
        "--pool",
        str(args.pool),
        "--device",
        args.device if method == "kernel" else "cpu",
        "--repeat",
        str(repeat),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OVLIFT_PROGRESS="0"))
    if done.returncode != 0:
        raise RuntimeError(f"{method} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(name: str, inputs: dict, inputs_path: str, args: argparse.Namespace, rows: list, repeat: int) -> None:
    kernel = measure("kernel", inputs_path, args, repeat)
    baseline = measure("baseline", inputs_path, args, repeat) if not args.skip_baseline else None
    row = {
        "workload": name,
        "points": len(inputs["points"]),
        "frames": len(inputs["world_to_cam"]),
        "correspondences": kernel["correspondences"],
        "kernel_s": kernel["seconds"],
        "gather_gb_s": kernel["correspondences"] * args.channels * 2 / kernel["seconds"] / 1e9,
        "kernel_peak_mb": kernel["peak_rss_mb"],
        "kernel_setup_mb": kernel["setup_rss_mb"],
        "kernel_gpu_peak_mb": kernel.get("gpu_peak_mb"),
    }
    if baseline is not None:
        assert kernel["count"] == baseline["count"], f"{name}: view counts differ between kernel and baseline"
        assert np.allclose(kernel["fused_sample"], baseline["fused_sample"], atol=1e-3), (
            f"{name}: fused features differ"
        )
        row.update(
            baseline_s=baseline["seconds"],
            baseline_peak_mb=baseline["peak_rss_mb"],
            baseline_setup_mb=baseline["setup_rss_mb"],
            speedup=baseline["seconds"] / kernel["seconds"],
        )
    rows.append(row)
    print_row(row)


def print_row(r: dict) -> None:
    base = (
        f"baseline {r['baseline_s']:8.2f} s  peak {r['baseline_peak_mb']:6.0f} MB  ratio {r['speedup']:5.1f}x"
        if "speedup" in r
        else "baseline skipped"
    )
    gpu = f" (GPU peak {r['kernel_gpu_peak_mb']:.0f} MB)" if r.get("kernel_gpu_peak_mb") else ""
    print(
        f"{r['workload']:<26} points {r['points']:>8,}  frames {r['frames']:>4}  corr {r['correspondences']:>11,}  "
        f"kernel {r['kernel_s']:7.2f} s  peak {r['kernel_peak_mb']:6.0f} MB{gpu}  |  {base}  "
        f"gathered {r['gather_gb_s']:5.1f} GB/s",
        flush=True,
    )
    print(
        f"{'':<26} (peak = resident memory during the timed part, including the process's "
        f"{r['kernel_setup_mb']:.0f} MB of libraries, inputs and feature maps held before it)",
        flush=True,
    )


def seven_scenes_inputs(args: argparse.Namespace) -> dict:
    from ovlift.cache_schema.groups.frames import FrameImages
    from ovlift.kernels.projection import resize_depth, rigid_inverse, scale_intrinsics
    from ovlift.pipeline.plan import plan_from_dict
    from ovlift.pipeline.runner import Runner

    plan = plan_from_dict(
        {
            "store": str(args.workdir / "store.zarr"),
            "dataset": {"name": "rgbd-folder", "paths": [str(args.data)]},
            "stages": {"input": {}},
        }
    )
    runner = Runner(plan)
    print("ingesting 7-Scenes (cached after the first run) ...", flush=True)
    runner.run(fail_fast=True)
    group = runner.store.read(plan.stages["input"].group_path(plan.dataset.scene_ids()[0]))
    frames = np.arange(0, group.dims["T"], args.frame_stride)
    hw = tuple(args.feature_size)
    image_hw = (group.dims["H"], group.dims["W"])
    return {
        "points": torch.from_numpy(group.load("points")),
        "world_to_cam": rigid_inverse(torch.from_numpy(group.load("frames/cam_to_world")[frames])),
        "intrinsics": scale_intrinsics(
            torch.from_numpy(group.load("frames/intrinsics")[frames]).double(), image_hw, hw
        ),
        "depth": resize_depth(torch.from_numpy(FrameImages(group).depth(frames)), hw),
        "hw": hw,
    }


def toy_inputs(spacing: float, frames: int, hw: tuple[int, int]) -> dict:
    """The first ``frames`` of a 64-frame toy scene (the layout depends on the camera
    loop, so the loop is fixed and only the number of frames used grows)."""
    from ovlift.datasets.toy import ToyConfig, ToyDataset
    from ovlift.kernels.projection import rigid_inverse

    config = ToyConfig(num_frames=64, image_height=hw[0], image_width=hw[1], vertex_spacing_m=spacing)
    scene = ToyDataset(config).build("toy_0000")
    rendered = [scene.render(i) for i in range(frames)]
    return {
        "points": torch.from_numpy(scene.points),
        "world_to_cam": rigid_inverse(torch.from_numpy(scene.cam_to_world[:frames])),
        "intrinsics": torch.from_numpy(np.stack([f.intrinsics for f in rendered])),
        "depth": torch.from_numpy(np.stack([f.depth for f in rendered])),
        "hw": hw,
    }


def growth(rows: list, key: str, prefix: str) -> str:
    sel = [r for r in rows if r["workload"].startswith(prefix)]
    x = np.log([r[key] for r in sel])
    y = np.log([r["kernel_s"] for r in sel])
    slope = np.polyfit(x, y, 1)[0]
    return f"kernel time ~ {key}^{slope:.2f} over {[r[key] for r in sel]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SEVEN_SCENES)
    parser.add_argument("--workdir", type=Path, default=REPO / "work" / "bench_project")
    parser.add_argument("--frame-stride", type=int, default=1, help="use every k-th 7-Scenes frame")
    parser.add_argument("--feature-size", type=int, nargs=2, default=(240, 320))
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--pool", type=int, default=2, help="distinct feature maps (and frames per kernel batch)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-toy", action="store_true")
    parser.add_argument("--skip-7scenes", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", choices=["kernel", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, C={args.channels}, "
        f"features {args.feature_size[0]}x{args.feature_size[1]} float16"
    )
    rows: list = []
    with tempfile.TemporaryDirectory() as tmp:

        def run(name: str, inputs: dict, repeat: int) -> None:
            path = os.path.join(tmp, "inputs.pt")
            torch.save(inputs, path)
            compare(name, inputs, path, args, rows, repeat)

        if not args.skip_7scenes:
            if not args.data.is_dir():
                print(f"skipping 7-Scenes: {args.data} not found")
            else:
                run("7-Scenes kitchen", seven_scenes_inputs(args), repeat=1)
        if not args.skip_toy:
            for spacing in (0.08, 0.05, 0.035, 0.025):
                run(f"toy points spacing={spacing}", toy_inputs(spacing, 16, tuple(args.feature_size)), repeat=3)
            for frames in (8, 16, 32, 64):
                run(f"toy frames n={frames}", toy_inputs(0.05, frames, tuple(args.feature_size)), repeat=3)
    if not args.skip_toy:
        print(growth(rows, "points", "toy points"))
        print(growth(rows, "frames", "toy frames"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
