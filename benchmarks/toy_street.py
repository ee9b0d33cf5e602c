"""Benchmark: generating ``toy-street`` key frames, and how well LiDAR sweeps pair with pixels.

Timing: each key frame at the default config (10 earlier sweeps of 1024 x 32 beams,
six 225x400 cameras) is generated from scratch: the street, the LiDAR (all 11
sweeps, registered), the six images. Wall-clock and process CPU time per part.

Label agreement: CLIP2Scene pairs the points of a few sweeps with the pixels of the
key frame's cameras without a depth test (nuScenes has no camera depth). Per sweep
index, every point of that sweep is projected into the six key-frame cameras
(``visible_correspondences``, depth None, ``VisibilityRule(cut_bound=5)``, as
OpenScene on nuScenes) and the pair counts as agreeing when the pixel's label is
the point's. A point of a later viewpoint can land on the pixel of something in
front of it (occlusion: no depth test), on sky past an edge, and a moving object's
older points land where it no longer is. Also shown: the same for static points
only, for moving ones only, with a depth test against the rendered z-buffer
(5 % relative) - what occlusion alone costs - and with the test the pipeline can
run without camera depth (``project.lidar_zbuffer_px``): the points of all sweeps
together form the z-buffer, each covering 3x3 pixels, and a point more than 10 %
behind the nearest one at its pixel is not paired.

    .venv/bin/python benchmarks/toy_street.py              # 3 key frames, ~10 s on 2 cores
    .venv/bin/python benchmarks/toy_street.py --scenes 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ovlift.datasets.toy_street import CAMERAS, SWEEP_PERIOD_S, ToyStreetConfig, ToyStreetDataset
from ovlift.kernels.projection import VisibilityRule, rigid_inverse, visible_correspondences


class Clock:
    """Wall-clock and process CPU seconds since the last ``lap``."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=3, help="key frames (each its own street)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = ToyStreetConfig(num_scenes=args.scenes, seed=args.seed)
    dataset = ToyStreetDataset(config)
    print(
        f"toy-street, default config: {config.num_sweeps} earlier sweeps x {config.azimuth_steps} x 32 beams, "
        f"{len(CAMERAS)} cameras at {config.image_height}x{config.image_width}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads (the ray casting runs on one)"
    )
    sweeps = config.num_sweeps + 1
    rule = VisibilityRule(cut_bound=5)
    tested_rule = VisibilityRule(depth_tolerance=0.05, cut_bound=5)
    zbuffer_rule = VisibilityRule(depth_tolerance=0.1, cut_bound=5, zbuffer_px=1)
    # per sweep: pairs, agreeing pairs; static (pairs, agreeing); moving; with the depth test; LiDAR z-buffer
    counts = np.zeros((sweeps, 5, 2), dtype=np.int64)
    times = []
    for scene_id in dataset.scene_ids():
        clock = Clock()
        scene = dataset.build(scene_id)
        t_layout = clock.lap()
        lidar = scene.lidar()
        t_lidar = clock.lap()
        frames = [scene.render(i) for i in range(len(CAMERAS))]  # as the input stage reads them
        t_cameras = clock.lap()
        times.append((t_layout, t_lidar, t_cameras))
        total = [sum(x) for x in zip(t_layout, t_lidar, t_cameras)]
        print(
            f"{scene_id}: {len(scene.layout.part_min)} parts, {len(lidar.points)} points; "
            f"street {t_layout[0]:.2f} s, LiDAR {t_lidar[0]:.2f} s ({t_lidar[1]:.2f} CPU), "
            f"6 cameras {t_cameras[0]:.2f} s ({t_cameras[1]:.2f} CPU); "
            f"key frame {total[0]:.2f} s wall, {total[1]:.2f} s CPU"
        )
        world_to_cam = rigid_inverse(torch.from_numpy(np.stack([f.cam_to_world for f in frames])))
        intrinsics = torch.from_numpy(np.stack([f.intrinsics for f in frames]))
        labels = np.stack([f.labels for f in frames])
        depth = torch.from_numpy(np.stack([scene.render_camera(i)[3] for i in range(len(CAMERAS))]))  # untimed
        speed = np.linalg.norm(scene.layout.instance_velocity[lidar.instances], axis=1)
        hw = (config.image_height, config.image_width)
        pairs = visible_correspondences(torch.from_numpy(lidar.points), world_to_cam, intrinsics, hw, zbuffer_rule)
        point = pairs.point_index.numpy()
        pixel = labels[pairs.frame_index.numpy(), pairs.pixel[:, 0].numpy(), pairs.pixel[:, 1].numpy()]
        np.add.at(counts[:, 4, 0], lidar.sweep[point], 1)
        np.add.at(counts[:, 4, 1], lidar.sweep[point], pixel == lidar.labels[point])
        for k in range(sweeps):
            mine = lidar.sweep == k
            points = torch.from_numpy(lidar.points[mine])
            for column, (r, d) in enumerate(((rule, None), (tested_rule, depth))):
                pairs = visible_correspondences(points, world_to_cam, intrinsics, hw, r, d)
                pixel = labels[pairs.frame_index.numpy(), pairs.pixel[:, 0].numpy(), pairs.pixel[:, 1].numpy()]
                point = pairs.point_index.numpy()
                agree = pixel == lidar.labels[mine][point]
                if column == 0:
                    moving = speed[mine][point] > 0
                    for row, which in ((0, slice(None)), (1, ~moving), (2, moving)):
                        counts[k, row] += (agree[which].size, agree[which].sum())
                else:
                    counts[k, 3] += (agree.size, agree.sum())

    wall = np.array([[t[0] for t in row] for row in times])
    cpu = np.array([[t[1] for t in row] for row in times])
    print(
        f"\nmean over {args.scenes} key frames: street {wall[:, 0].mean():.2f} s, LiDAR {wall[:, 1].mean():.2f} s, "
        f"cameras {wall[:, 2].mean():.2f} s; key frame {wall.sum(1).mean():.2f} s wall, {cpu.sum(1).mean():.2f} s CPU"
    )

    def percent(row: np.ndarray) -> str:
        return f"{100 * row[1] / row[0]:6.1f}" if row[0] else "     -"

    print(f"\nlabel agreement of point-pixel pairs, {args.scenes} key frames, no depth test, cut_bound 5")
    print("sweep  time s    pairs  agree %  static %  moving %  | camera depth test %  LiDAR z-buffer %  pairs kept %")
    for k in range(sweeps):
        c = counts[k]
        print(
            f"{k:5d}  {-k * SWEEP_PERIOD_S:6.2f}  {c[0, 0]:7d}   {percent(c[0])}    {percent(c[1])}    "
            f"{percent(c[2])}  |  {percent(c[3])}               {percent(c[4])}            "
            f"{100 * c[4, 0] / max(c[0, 0], 1):5.1f}"
        )


if __name__ == "__main__":
    main()
