"""Student training throughput: points per second of one optimisation step.

Times forward + backward + Adam steps of the sparse U-Net on toy scenes (batch of
2 scenes, random 384-d targets, cosine loss, augmentation and voxelisation
included), for the full MinkUNet18A and for the demo's small student, after a
warm-up. CPU by default; ``--device cuda`` where a GPU is lent.

    .venv/bin/python benchmarks/train_throughput.py [--device cuda] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ovlift.datasets.toy import ToyConfig, ToyDataset
from ovlift.models.student import MinkUNet, sparse_input
from ovlift.models.student_config import StudentConfig
from ovlift.models.training import Augment, epoch_generator

CONFIGS = {
    "MinkUNet18A, 2 cm": StudentConfig(),
    "MinkUNet18A, 5 cm": StudentConfig(voxel_size_m=0.05),
    "demo student, 8 cm": StudentConfig(planes=(16, 32, 64, 128, 64, 64, 48, 48), layers=(1,) * 8, init_dim=16,
                                         stem_kernel=3, voxel_size_m=0.08),
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
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads; "
          f"batch of 2 toy scenes, {points:,} points")
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = MinkUNet(config, 384, device).to(device)
        optimizer = torch.optim.Adam(model.parameters(), 1e-4)
        targets = [torch.randn(len(p), 384, device=device) for p in scenes]
        times, voxels = [], 0
        for step in range(args.steps + 1):  # step 0 warms up
            generator = epoch_generator(0, step)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            x, maps = sparse_input([(Augment()(p, generator), None) for p in scenes], config, device)
            features = model(x)
            loss = sum((1 - F.cosine_similarity(features[m], t, dim=1)).mean() for m, t in zip(maps, targets))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:
                times.append(time.perf_counter() - start)
            voxels = x.features.shape[0]
        per_step = sum(times) / len(times)
        print(f"{name:<20} {sum(p.numel() for p in model.parameters()) / 1e6:5.1f} M params  {voxels:>7,} voxels  "
              f"{per_step:6.3f} s/step  {points / per_step:>10,.0f} points/s", flush=True)


if __name__ == "__main__":
    main()
