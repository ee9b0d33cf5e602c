"""Bytes per frame of the storage encodings of 2D teacher features, and what the compact
ones cost in accuracy.

``--part sizes``:

* toy scenes: the synthetic teacher (MiniLM space, C=384) at 240x320;
* real 7-Scenes frames: the mask-crops teacher (CUS3D) with random-weight
  models of realistic output sizes (Mask2Former with 100 queries, CLIP with
  C=512), 32 masks per frame, top-4 masks per pixel, at 240x320; and, for
  contrast, the dense-only maskclip teacher, whose features vary per pixel.

Raw bytes are the arrays' in-memory size; stored bytes what Zarr (zstd) wrote.
The random models' masks are not real masks: their raw sizes are exact, their
compression is not representative of a trained model's.

``--part compact``: on every ``--stride``-th real 7-Scenes frame (240x320), each compact
encoding (``dense-int8``; ``dense-pca`` at 64 and 32 components fitted on 16 frames, and at
64 fitted on every frame) against ``dense``, for two teachers: ``trained`` (the demo's
committed network, C=384: its features span at most 17 dimensions before the per-pixel
normalisation, so PCA is near its best case) and ``maskclip`` on a random-weight CLIP with
ViT-B/16's image tower (768 wide, 12 layers, C=512, unnormalised as OpenScene fuses: nearly
white features, PCA's worst case; ``--clip-path`` measures a real CLIP instead). Per pixel
(with a feature): relative L2 error, cosine to the dense feature, and how often the class
(argmax over ScanNet-20's prompts) changes; the same per point after ``project``; and the
bytes per frame, streamed (``maps: stream``, whose project output is checked byte-identical
to the stored one) included.

    .venv/bin/python benchmarks/feature_encodings.py [--part sizes|compact|all] [--stride 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ovlift.cache_schema import iter_arrays
from ovlift.cache_schema.groups.extract2d import EXTRACT2D_SPEC, TeacherFeatures
from ovlift.cache_schema.groups.project import fused_features
from ovlift.kernels.classify import classify
from ovlift.models.text import TextEncoderConfig
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.vocabularies import get_vocabulary

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


def sizes(args: argparse.Namespace) -> None:
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


COMPACT = {
    "int8": {"encoding": "dense-int8"},
    "pca64": {"encoding": "dense-pca", "pca_channels": 64},
    "pca32": {"encoding": "dense-pca", "pca_channels": 32},
    "pca64-all": {"encoding": "dense-pca", "pca_channels": 64, "pca_fit_frames": 100000},
}
"""Compact variants, each measured against the teacher's dense maps."""


def compact(args: argparse.Namespace, tmp: str) -> None:
    vit_b = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
    clip = clip_folder(
        Path(tmp) / "clip-b16", projection_dim=512, vision={**vit_b, "image_size": 224, "patch_size": 16}
    )
    teachers = {
        "trained": {"implementation": "trained", "model_path": str(REPO / "models" / "toy" / "demo")},
        "maskclip": {"implementation": "maskclip", "clip_path": str(clip), "normalize": False, "templates": "single"},
    }
    for name, teacher in teachers.items():
        if name not in args.teachers:
            continue
        variants = {"dense": {}, "streamed": {"maps": "stream"}, **COMPACT}
        plan = plan_from_dict(
            {
                "store": f"{tmp}/{name}.zarr",
                "dataset": {"name": "rgbd-folder", "paths": [str(args.data)], "frame_stride": args.stride},
                "stages": {
                    "input": {},
                    "extract2d": {v: {**teacher, **SIZE, **fields} for v, fields in variants.items()},
                    "project": {},
                },
            }
        )
        runner = Runner(plan)
        runner.run(fail_fast=True)
        scene = runner.plan.dataset.scene_ids()[0]
        frames = len(runner.store.read(EXTRACT2D_SPEC.path(scene, "dense")).load("frames"))
        print(f"\n7-Scenes, {frames} frames (every {args.stride}th), teacher {name}:", flush=True)
        compare(runner, scene, list(variants))


def compare(runner: Runner, scene: str, variants: list[str]) -> None:
    """One Markdown row per variant: bytes per frame, per-pixel and per-point errors against dense."""
    project = runner.store.read(f"scenes/{scene}/project")
    dense = TeacherFeatures(runner.store.read(EXTRACT2D_SPEC.path(scene, "dense")))
    vocab = get_vocabulary("scannet20")
    prompts = runner.text(TextEncoderConfig(**dense.group.info["text_encoder"]), list(vocab.prompts))
    prompt_class = torch.tensor(vocab.prompt_class)
    print(
        "| variant | raw KiB/frame | stored KiB/frame | pixel rel. L2 | pixel cosine (mean, 1st pct) "
        "| pixel class changed | point rel. L2 | point cosine (mean, 1st pct) | point class changed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    seen = project.load("fused/dense/seen")
    reference = torch.from_numpy(fused_features(project, "dense")[seen]).float()
    for variant in variants:
        group = runner.store.read(EXTRACT2D_SPEC.path(scene, variant))
        raw, stored, _ = per_frame(runner, scene, variant)
        fused = torch.from_numpy(fused_features(project, variant)[seen]).float()
        if variant == "streamed":
            same = fused_features(project, "streamed").tobytes() == fused_features(project, "dense").tobytes()
            print(
                f"| streamed | {raw / 2**10:,.1f} | {stored / 2**10:,.1f} | project output "
                f"{'byte-identical to dense' if same else 'DIFFERS from dense'} | | | | | |"
            )
            continue
        pixel = errors(pixel_pairs(dense, TeacherFeatures(group)), prompts, prompt_class)
        point = errors([(reference, fused)], prompts, prompt_class)
        print(f"| {variant} | {raw / 2**10:,.1f} | {stored / 2**10:,.1f} | {pixel} | {point} |", flush=True)


def pixel_pairs(dense: TeacherFeatures, other: TeacherFeatures, batch: int = 4):
    """(dense, other) float32 features of each frame batch's pixels that have one."""
    for start in range(0, len(dense.frames), batch):
        local = np.arange(start, min(start + batch, len(dense.frames)))
        a, b = dense.read(local), other.read(local)
        yield a.images[a.valid].float(), b.images[a.valid].float()


def errors(pairs, prompts: torch.Tensor, prompt_class: torch.Tensor) -> str:
    """Relative L2 error (over all features), mean and 1st-percentile cosine, share of changed classes."""
    err = ref = changed = count = 0.0
    cosines = []
    for a, b in pairs:
        err += float(((b - a) ** 2).sum())
        ref += float((a**2).sum())
        cosines.append(torch.nn.functional.cosine_similarity(a, b, dim=1))
        changed += float((classify(a, prompts, prompt_class)[1] != classify(b, prompts, prompt_class)[1]).sum())
        count += len(a)
    cos = torch.cat(cosines)
    low = float(cos.kthvalue(max(1, len(cos) // 100)).values)
    return f"{(err / ref) ** 0.5:.4f} | {float(cos.mean()):.5f}, {low:.4f} | {100 * changed / count:.2f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SEVEN_SCENES)
    parser.add_argument("--part", choices=("sizes", "compact", "all"), default="all")
    parser.add_argument("--stride", type=int, default=10, help="every k-th 7-Scenes frame for --part compact")
    parser.add_argument("--clip-path", type=Path, help="a real CLIP folder for maskclip (default: random weights)")
    parser.add_argument("--teachers", nargs="+", default=["trained", "maskclip"], help="for --part compact")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("sizes", "all"):
            sizes(args)
        if args.part in ("compact", "all"):
            if not args.data.is_dir():
                print(f"skipping the compact encodings: {args.data} not found")
                return
            compact(args, tmp)


if __name__ == "__main__":
    main()
