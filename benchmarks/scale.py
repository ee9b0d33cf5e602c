"""Benchmark: store bytes, peak memory and time at real dataset sizes, and whole datasets projected.

ScanNet-sized scenes: N copies of the real 7-Scenes kitchen (folders of symlinks read by the
``rgbd-folder`` reader; its frames are ScanNet-like: 640x480 JPEG colour and uint16 millimetre
depth), each with 84 frames (every 6th of its 500; ScanNet's 1-in-20 over its average 1,650
frames a scan is 83) and a point cloud voxelised to about 150,000 points; a dense 512-channel
teacher (MaskCLIP on a random-weight CLIP, 320x240 maps: its values are not CLIP's, its sizes
are) streamed into ``project``; ``distill`` of a small student for about the same number of
steps at every N (2 scenes a step; max(N) / N epochs: glibc keeps freed memory for the first
dozen steps or so, so peaks are compared at equal steps). For N = 5, 10, 20, 40 (each N adds
scenes to one store, so ingest and project run on the new scenes only; distill trains on all
N): the time and peak resident memory of each phase
(its own process; peak = VmHWM, libraries included) and the store's bytes. The same teacher with
its per-pixel maps kept (``maps: store``) is measured on one scene: those maps do not fit this
disk for more.

nuScenes-sized key frames: toy streets (``toy-street``: 10 sweeps, about 330,000 points, six
cameras at 450x800) with CLIP2Scene's plan (the teacher at 56x100, streamed; cut_bound 5, no
occlusion test), whose fused features ``project`` stores deduplicated (points of ten sweeps see
the same few feature pixels).

Then the full datasets are projected from the measured bytes, with the arithmetic printed,
beside OpenScene's published sizes (its download script: ScanNet OpenSeg fused train/val
234.8 GB, LSeg 175.8 GB; Matterport OpenSeg 198.3 GB train/val + 66.7 GB test; nuScenes
OpenSeg validation 165 GB).

    .venv/bin/python benchmarks/scale.py --out work/bench_scale        # ~40 min on 2 cores
    .venv/bin/python benchmarks/scale.py --scenes 2 4 --streets 1     # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEVEN_SCENES = REPO.parent / "shared" / "data" / "7scenes-redkitchen"
sys.path.insert(0, str(REPO / "tests"))

GB = 1e9
SCANNET = {"scans": 1513, "frames_per_scan": 2_500_000 / 1513 / 20, "openscene_fused_gb": 234.8}
MATTERPORT = {"regions": 2194, "images": 194_400, "image_pixels": 1280 * 1024, "openscene_fused_gb": 198.3 + 66.7}
NUSCENES = {"key_frames": 34_149, "openscene_val_fused_gb": 165.0, "val_key_frames": 6019}
STREAM = {"maps": "stream"}
"""The extract2d setting that streams a teacher into project instead of storing its maps."""


# -- plans ---------------------------------------------------------------------------


def kitchen_plan(args: argparse.Namespace, n: int, store: Path, maps: dict) -> dict:
    folders = [str(kitchen_folder(args, i)) for i in range(n)]
    return {
        "store": str(store),
        "dataset": {
            "name": "rgbd-folder",
            "paths": folders,
            "frame_stride": args.frame_stride,
            "cloud_frame_stride": max(
                1, round(60 / args.frame_stride)
            ),  # the cloud from every 60th frame at any stride
            "voxel_size_m": args.voxel_size,
        },
        "splits": {"train": [Path(f).name for f in folders]},
        "vocabulary": "scannet20",
        "stages": {
            "input": {},
            "extract2d": {
                "maskclip": {
                    "implementation": "maskclip",
                    "clip_path": str(clip_model(args)),
                    "feature_height": 240,
                    "feature_width": 320,
                    "input_short_side": 224,
                    "templates": "single",
                    **maps,
                }
            },
            "project": {},
            "distill": {
                "split": "train",
                "epochs": math.ceil(max(args.scenes) / n),  # about the same number of steps for every N
                "batch_size": 2,
                "templates": "single",
                "student": {
                    "planes": [16, 32, 32, 32, 32, 32, 16, 16],
                    "layers": [1] * 8,
                    "init_dim": 16,
                    "voxel_size_m": 0.05,
                },
            },
        },
    }


def street_plan(args: argparse.Namespace, store: Path) -> dict:
    return {
        "store": str(store),
        "dataset": {
            "name": "toy-street",
            "num_scenes": args.streets,
            "num_sweeps": 10,
            "image_height": 450,
            "image_width": 800,
        },
        "vocabulary": "nuscenes16",
        "stages": {
            "input": {},
            "extract2d": {
                "maskclip": {
                    "implementation": "maskclip",
                    "clip_path": str(clip_model(args)),
                    "feature_height": 56,
                    "feature_width": 100,
                    "templates": "single",
                    **STREAM,
                }
            },
            "project": {"cut_bound": 5},
        },
    }


def kitchen_folder(args: argparse.Namespace, i: int) -> Path:
    """Scene i: a folder of symlinks to the kitchen's files (the reader's scene id is the folder's
    name, and it resolves a symlinked folder to the kitchen's own)."""
    folder = args.workdir / "kitchens" / f"kitchen_{i:03d}"
    if not (folder / "camera-intrinsics.txt").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for source in sorted(args.data.resolve().iterdir()):
            if not (folder / source.name).exists():
                (folder / source.name).symlink_to(source)
    return folder


def clip_model(args: argparse.Namespace) -> Path:
    from tiny_models import clip_folder

    path = args.workdir / f"clip_{args.channels}"
    if not (path / "config.json").is_file():
        clip_folder(path, projection_dim=args.channels)
    return path


# -- one phase in its own process --------------------------------------------------------


def worker(plan_path: Path, stages: list[str]) -> None:
    from ovlift.pipeline.plan import plan_from_dict
    from ovlift.pipeline.runner import Runner

    runner = Runner(plan_from_dict(json.loads(plan_path.read_text())))
    setup = reset_peak_rss()
    start = time.perf_counter()
    report = runner.run(stages=stages, fail_fast=True)
    if report.failed:
        raise SystemExit(f"{stages} failed: {[o.error for o in report.failed]}")
    ran = sorted({o.scene_id for o in report.outcomes if o.status == "ran" and o.stage in stages})
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "peak_gb": status_kb("VmHWM") * 1024 / GB,
                "setup_gb": setup,
                "ran": ran,
            }
        )
    )


def reset_peak_rss() -> float:
    """Restart VmHWM (Linux) after the imports; returns the resident GB now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_kb("VmRSS") * 1024 / GB


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def phase(plan: dict, stages: list[str], workdir: Path) -> dict:
    path = workdir / "plan.json"
    path.write_text(json.dumps(plan))
    cmd = [sys.executable, __file__, "--worker", str(path), "--stages", *stages]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OVLIFT_PROGRESS="0"))
    if done.returncode != 0:
        raise RuntimeError(f"{stages} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- store bytes ------------------------------------------------------------------------


def stored_bytes(store_path: Path, stage: str) -> dict[str, int]:
    """Stored (compressed) bytes of every scene's ``stage`` groups (all variants), by array name."""
    from ovlift.cache_schema import Store, iter_arrays

    store = Store(store_path)
    totals: dict[str, int] = {}
    for scene in store.scene_ids():
        for path in store.stage_groups(scene):
            if path.split("/")[2] != stage:
                continue
            group = store.read(path)
            assert group is not None, path
            for name, array in iter_arrays(group.group):
                totals[name] = totals.get(name, 0) + array.nbytes_stored()
    return totals


# -- measurements ------------------------------------------------------------------------


def kitchens(args: argparse.Namespace) -> dict:
    """Ingest, streamed project and distill for each N on one growing store; maps kept on one scene."""
    store, rows = args.workdir / "kitchens.zarr", []
    for n in sorted(args.scenes):
        plan = kitchen_plan(args, n, store, STREAM)
        row: dict = {"scenes": n}
        for name, stage in (("ingest", "input"), ("project", "project"), ("distill", "distill")):
            row[name] = phase(plan, [stage], args.workdir)
        row["bytes"] = {stage: stored_bytes(store, stage) for stage in ("input", "extract2d", "project")}
        rows.append(row)
        print_kitchen_row(row, flush=True)
    cached_store = args.workdir / "kitchen_maps.zarr"
    cached = phase(kitchen_plan(args, 1, cached_store, {}), ["project"], args.workdir)
    cached["bytes"] = {stage: stored_bytes(cached_store, stage) for stage in ("extract2d", "project")}
    last = rows[-1]
    frames = scene_frames(store)
    per_scene = {k: sum(v.values()) / last["scenes"] for k, v in last["bytes"].items()}
    return {"rows": rows, "cached": cached, "frames_per_scene": frames, "per_scene_bytes": per_scene}


def scene_frames(store_path: Path) -> float:
    from ovlift.cache_schema import Store

    store = Store(store_path)
    counts = [store.read(f"scenes/{s}/input").dims["T"] for s in store.scene_ids()]
    return sum(counts) / len(counts)


def print_kitchen_row(row: dict, flush: bool = True) -> None:
    parts = [f"N={row['scenes']:>3}"]
    for name in ("ingest", "project", "distill"):
        r = row[name]
        parts.append(f"{name} {r['seconds']:7.1f} s ({len(r['ran'])} ran) peak {r['peak_gb']:5.2f} GB")
    total = sum(sum(v.values()) for v in row["bytes"].values())
    parts.append(f"store {total / GB:6.2f} GB")
    print("  ".join(parts), flush=flush)


def streets(args: argparse.Namespace) -> dict:
    store = args.workdir / "streets.zarr"
    run = phase(street_plan(args, store), ["project"], args.workdir)
    from ovlift.cache_schema import Store

    s = Store(store)
    ids = s.scene_ids()
    points = sum(s.read(f"scenes/{i}/input").dims["N"] for i in ids) / len(ids)
    distinct = [s.read(f"scenes/{i}/project").dims.get("D_maskclip") for i in ids]
    bytes_ = {stage: stored_bytes(store, stage) for stage in ("input", "extract2d", "project")}
    return {"run": run, "key_frames": len(ids), "points": points, "distinct_rows": distinct, "bytes": bytes_}


# -- full datasets ----------------------------------------------------------------------


def group(totals: dict[str, int], *prefixes: str) -> int:
    return sum(v for k, v in totals.items() if k.startswith(prefixes))


def projections(k: dict, st: dict, args: argparse.Namespace) -> dict:
    last = k["rows"][-1]
    n, frames = last["scenes"], k["frames_per_scene"]
    inp, proj = last["bytes"]["input"], last["bytes"]["project"]
    per = {
        "frame": group(inp, "frames/color", "frames/depth") / (n * frames),
        "points": group(inp, "points", "colors", "normals", "faces", "labels", "instances") / n,
        "fused": group(proj, "fused/") / n,
        "correspondences": group(proj, "point_index", "frame_index", "pixel", "view_count") / n,
        "maps": sum(k["cached"]["bytes"]["extract2d"].values()) / frames,
    }
    streamed_s = last["project"]["seconds"] / max(len(last["project"]["ran"]), 1)
    print(f"\nmeasured per ScanNet-sized scene ({n} scenes, {frames:.0f} frames, {args.channels}-d teacher streamed):")
    print(
        f"  frames (colour + depth) {per['frame'] / 1e6:.3f} MB a frame; points {per['points'] / 1e6:.1f} MB; "
        f"fused features {per['fused'] / 1e6:.1f} MB; correspondences {per['correspondences'] / 1e6:.1f} MB"
    )
    print(
        f"  maps kept (one scene): {per['maps'] / 1e6:.1f} MB a frame; extract2d + project "
        f"{k['cached']['seconds']:.1f} s a scene, against {streamed_s:.1f} s streamed"
    )
    return {
        "frame_store_mb": per["frame"] / 1e6,
        "scannet": scannet(per),
        "matterport": matterport(per, args.channels),
        "nuscenes": nuscenes(st),
    }


def show(label: str, arithmetic: str, value: float, unit: str, note: str = "") -> None:
    print(f"  {label:<16} {arithmetic} = {value:8.1f} {unit}{'  (' + note + ')' if note else ''}")


def scannet(per: dict) -> dict:
    scans, frames = SCANNET["scans"], SCANNET["frames_per_scan"]
    out = {
        "frames_gb": scans * frames * per["frame"] / GB,
        "features_gb": scans * per["fused"] / GB,
        "correspondences_gb": scans * per["correspondences"] / GB,
        "points_gb": scans * per["points"] / GB,
        "maps_kept_gb": scans * frames * per["maps"] / GB,
    }
    print("\nScanNet v2 (1,513 scans, 1-in-20 frames, the teacher streamed):")
    show("frames", f"{scans} x {frames:.1f} x {per['frame'] / 1e6:.3f} MB", out["frames_gb"], "GB", "goal <= 75")
    show(
        "fused features",
        f"{scans} x {per['fused'] / 1e6:.1f} MB",
        out["features_gb"],
        "GB",
        f"goal <= 250; OpenScene: OpenSeg 768-d {SCANNET['openscene_fused_gb']} GB, LSeg 512-d 175.8 GB",
    )
    show("correspondences", f"{scans} x {per['correspondences'] / 1e6:.1f} MB", out["correspondences_gb"], "GB")
    show("points", f"{scans} x {per['points'] / 1e6:.1f} MB", out["points_gb"], "GB")
    show("maps, if kept", f"{scans} x {frames:.1f} x {per['maps'] / 1e6:.1f} MB", out["maps_kept_gb"], "GB")
    return out


def matterport(per: dict, channels: int) -> dict:
    mp = MATTERPORT
    ratio = mp["image_pixels"] / (640 * 480)
    seen = mp["openscene_fused_gb"] * GB / mp["regions"] / (768 * 2)
    out = {
        "frames_gb": mp["images"] * per["frame"] * ratio / GB,
        "features_gb": mp["regions"] * seen * channels * 2 / GB,
    }
    print("\nMatterport3D (2,194 regions, 194,400 images at 1280x1024; estimates from the kitchen's bytes):")
    show(
        "frames",
        f"{mp['images']:,} x {per['frame'] / 1e6:.3f} MB x {ratio:.2f} (pixels / 640x480)",
        out["frames_gb"],
        "GB",
    )
    show(
        "fused features",
        f"{mp['regions']} x {seen:,.0f} seen points (OpenScene's 265.0 GB at 768-d) x {channels} x 2 B",
        out["features_gb"],
        "GB",
    )
    return out


def nuscenes(st: dict) -> dict:
    keys = NUSCENES["key_frames"]
    sb = st["bytes"]
    both = sb["input"] | sb["project"]
    parts = {
        name: group(both, *prefixes) / st["key_frames"]
        for name, prefixes in (
            ("points", ("points", "sweep", "timestamp", "labels", "instances")),
            ("frames", ("frames/",)),
            ("fused", ("fused/",)),
            ("correspondences", ("point_index", "frame_index", "pixel", "view_count")),
        )
    }
    key_b = sum(sum(v.values()) for v in sb.values()) / st["key_frames"]
    out = {"total_tb": keys * key_b / 1e12, "per_key_frame_mb": {k: v / 1e6 for k, v in parts.items()}}
    print(
        f"\nnuScenes v1.0-trainval (34,149 key frames, 10 sweeps; measured on {st['key_frames']} toy-street key "
        f"frames of {st['points']:,.0f} points, six 450x800 cameras, CLIP2Scene's plan, teacher streamed):"
    )
    print(
        "  per key frame: "
        + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in parts.items())
        + f"; distinct fused rows {st['distinct_rows']}"
    )
    show(
        "everything",
        f"{keys:,} x {key_b / 1e6:.1f} MB",
        out["total_tb"] * 1e3,
        "GB",
        f"goal <= 2,000 GB; OpenScene's validation fused features alone: {NUSCENES['openscene_val_fused_gb']} GB "
        f"for {NUSCENES['val_key_frames']:,} key frames",
    )
    return out


# -- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SEVEN_SCENES)
    parser.add_argument("--workdir", type=Path, default=REPO / "work" / "bench_scale")
    parser.add_argument("--scenes", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--streets", type=int, default=3, help="toy-street key frames for the nuScenes sizes")
    parser.add_argument("--frame-stride", type=int, default=6)
    parser.add_argument("--voxel-size", type=float, default=0.0167, help="about 150,000 points")
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--out", type=Path, help="also write OUT/scale.json")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stages", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.stages)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: the 7-Scenes kitchen is not there (--data)")
    k = kitchens(args)
    st = streets(args)
    projected = projections(k, st, args)
    peaks = {str(r["scenes"]): r["distill"]["peak_gb"] for r in k["rows"]}
    lo, hi = min(peaks.values()), max(peaks.values())
    print(f"\ndistill peak RSS by N: {peaks}  (max/min {hi / lo:.3f}; goal within 10 %)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "distill_peak_rss_gb": peaks,
            "frame_store_mb": projected.pop("frame_store_mb"),
            "projected": projected,
            "kitchens": k,
            "streets": st,
        }
        (args.out / "scale.json").write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out / 'scale.json'}")


if __name__ == "__main__":
    main()
