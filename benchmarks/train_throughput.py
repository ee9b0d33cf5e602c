"""Student training throughput: points per second of one optimisation step.

Times forward + backward + Adam steps of the sparse U-Net on toy scenes (batch of
2 scenes, random 384-d targets, augmentation and voxelisation included), for the
full MinkUNet18A and for the demo's small student, after a warm-up, under the
deterministic algorithms training uses. Each is timed with the distill stage's
loss (regrouped per voxel) and with the baseline per-point form (voxel features
gathered to points, then ``1 - cos``), and the ratio printed. CPU by default;
``--device cuda`` where a GPU is lent.

    .venv/bin/python benchmarks/train_throughput.py [--device cuda] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ovlift.datasets.toy import ToyConfig, ToyDataset
from ovlift.models.student import MinkUNet, sparse_input
from ovlift.models.student_config import StudentConfig
from ovlift.models.training import Augment, Losses, deterministic_algorithms, epoch_generator

CONFIGS = {
    "MinkUNet18A, 2 cm": StudentConfig(),
    "MinkUNet18A, 5 cm": StudentConfig(voxel_size_m=0.05),
    "demo student, 8 cm": StudentConfig(
        planes=(16, 32, 64, 128, 64, 64, 48, 48), layers=(1,) * 8, init_dim=16, stem_kernel=3, voxel_size_m=0.08
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--vertex-spacing", type=float, default=0.05, help="toy point spacing (density)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dataset = ToyDataset(ToyConfig(num_frames=1, vertex_spacing_m=args.vertex_spacing))
    scenes = [torch.from_numpy(dataset.load(f"toy_000{i}").points) for i in range(2)]
    points = sum(len(p) for p in scenes)
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads; "
        f"batch of 2 toy scenes, {points:,} points"
    )
    print(f"{'student':<20} {'params':>8} {'voxels':>8}  {'loss':<9} {'s/step':>7} {'points/s':>10}  ratio")
    for name, config in CONFIGS.items():
        per_step = {}
        for form, loss_fn in LOSS_FORMS.items():
            per_step[form], voxels, params = time_steps(config, scenes, loss_fn, args.steps, device)
            ratio = f"{per_step['per-point'] / per_step[form]:.2f}x" if form == "voxel" else "1.00x"
            print(
                f"{name:<20} {params / 1e6:6.1f} M {voxels:>8,}  {form:<9} {per_step[form]:7.3f} "
                f"{points / per_step[form]:>10,.0f}  {ratio}",
                flush=True,
            )


def per_point_loss(features, maps, targets):
    gathered = features[torch.cat(maps)]
    return (1 - F.cosine_similarity(gathered, targets.to(gathered.dtype), dim=1)).mean()


LOSS_FORMS = {
    "per-point": per_point_loss,
    "voxel": lambda features, maps, targets: Losses()(features, torch.cat(maps), targets, None, None)[0],
}


def time_steps(config, scenes, loss_fn, steps, device) -> tuple[float, int, int]:
    """Mean seconds of ``steps`` training steps after one warm-up step; voxels; parameters."""
    torch.manual_seed(0)
    model = MinkUNet(config, 384, device).to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    targets = torch.randn(sum(len(p) for p in scenes), 384, device=device).half()
    times, voxels = [], 0
    with deterministic_algorithms():
        for step in range(steps + 1):
            generator = epoch_generator(0, step)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            x, maps = sparse_input([(Augment()(p, generator), None) for p in scenes], config, device)
            loss = loss_fn(model(x), maps, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:
                times.append(time.perf_counter() - start)
            voxels = x.features.shape[0]
    return sum(times) / len(times), voxels, sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
