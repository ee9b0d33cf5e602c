"""Bytes per frame of the two storage encodings of 2D teacher features.

* toy scenes: the synthetic teacher (MiniLM space, C=384) at 240x320;
* real 7-Scenes frames: the mask-crops teacher (CUS3D) with random-weight
  models of realistic output sizes (Mask2Former with 100 queries, CLIP with
  C=512), 32 masks per frame, top-4 masks per pixel, at 240x320; and, for
  contrast, the dense-only maskclip teacher, whose features vary per pixel.

Raw bytes are the arrays' in-memory size; stored bytes what Zarr (zstd) wrote.
The random models' masks are not real masks: their raw sizes are exact, their
compression is not representative of a trained model's.

    .venv/bin/python benchmarks/feature_encodings.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ovlift.cache_schema import iter_arrays
from ovlift.cache_schema.groups.extract2d import EXTRACT2D_SPEC
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import clip_folder, mask2former_folder

REPO = Path(__file__).resolve().parents[1]
SEVEN_SCENES = REPO.parent / "shared" / "data" / "7scenes-redkitchen"
SIZE = {"feature_height": 240, "feature_width": 320}


def per_frame(runner: Runner, scene: str, teacher: str) -> tuple[int, int, int]:
    group = runner.store.read(EXTRACT2D_SPEC.path(scene, teacher))
    arrays = dict(iter_arrays(group.group))
    raw = sum(a.nbytes for a in arrays.values())
    stored = sum(a.nbytes_stored() for a in arrays.values())
    frames = len(group.load("frames"))
    return raw // frames, stored // frames, frames


def report(runner: Runner, scene: str, label: str, teachers: tuple[str, ...] = ("dense", "masks")) -> None:
    for teacher in teachers:
        raw, stored, frames = per_frame(runner, scene, teacher)
        print(
            f"{label:<36} {teacher:<8} {frames:>3} frames  raw {raw / 2**10:10.1f} KiB/frame  "
            f"stored {stored / 2**10:10.1f} KiB/frame",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SEVEN_SCENES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        toy = plan_from_dict(
            {
                "store": f"{tmp}/toy.zarr",
                "dataset": {"name": "toy", "num_scenes": 1, "image_height": 240, "image_width": 320},
                "stages": {
                    "input": {},
                    "extract2d": {
                        "dense": {"implementation": "synthetic", "bleed_px": 2, **SIZE},
                        "masks": {
                            "implementation": "synthetic",
                            "bleed_px": 2,
                            "encoding": "masks",
                            "top_k": 1,
                            **SIZE,
                        },
                    },
                },
            }
        )
        runner = Runner(toy)
        runner.run(fail_fast=True)
        report(runner, "toy_0000", "toy scene, synthetic (C=384, k=1)")
        if not args.data.is_dir():
            print(f"skipping 7-Scenes: {args.data} not found")
            return
        clip = clip_folder(Path(tmp) / "clip", projection_dim=512)
        segmenter = mask2former_folder(Path(tmp) / "m2f", num_queries=100)
        teacher = {
            "implementation": "mask-crops",
            "segmenter_path": str(segmenter),
            "clip_path": str(clip),
            "max_masks": 32,
            "mask_threshold": 0.5,
            "top_k": 4,
            "segmenter_short_side": 240,
            **SIZE,
        }
        real = plan_from_dict(
            {
                "store": f"{tmp}/real.zarr",
                "dataset": {"name": "rgbd-folder", "paths": [str(args.data)], "frame_stride": 50},
                "stages": {
                    "input": {},
                    "extract2d": {
                        "dense": teacher,
                        "masks": {**teacher, "encoding": "masks"},
                        "maskclip": {"implementation": "maskclip", "clip_path": str(clip), **SIZE},
                    },
                },
            }
        )
        runner = Runner(real)
        runner.run(fail_fast=True)
        scene = runner.plan.dataset.scene_ids()[0]
        report(runner, scene, "7-Scenes, mask-crops (C=512, k=4)")
        report(runner, scene, "7-Scenes, maskclip (C=512, per-pixel)", ("maskclip",))


if __name__ == "__main__":
    main()
