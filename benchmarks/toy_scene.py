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
    built = time.process_time()
    for i in range(src.num_frames):
        src.read_frame(i)
    done = time.process_time()
    print(
        f"default toy scene: {len(src.points)} points, {len(src.faces)} triangles, {src.num_frames} frames, "
        f"{done - start:.2f} s CPU on one core (scene and mesh {built - start:.2f} s, rendering {done - built:.2f} s)"
    )


if __name__ == "__main__":
    main()
