"""CPU time to generate and render one default toy scene on one core.

The toy dataset makes every test and the demo possible without data; a scene
should take a second or two so that CI stays fast.

    .venv/bin/python benchmarks/toy_scene.py
"""

from __future__ import annotations

import time

import torch

from ovlift.datasets.toy import ToyConfig, ToyDataset


def main() -> None:
    torch.set_num_threads(1)
    start = time.process_time()
    src = ToyDataset(ToyConfig()).load("toy_0002")
    for i in range(src.num_frames):
        src.read_frame(i)
    cpu = time.process_time() - start
    print(f"default toy scene: {len(src.points)} points, {src.num_frames} frames, {cpu:.2f} s CPU on one core")


if __name__ == "__main__":
    main()
