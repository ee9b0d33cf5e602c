"""A toy scene rendered as a real RGB-D sensor sees it, for the dataset-layout tests.

The ScanNet, Matterport3D and S3DIS tests write such a scene in each dataset's
published file layout and read it back. Colour and depth come from two cameras
with their own size and intrinsics (ScanNet: 1296x968 colour, 640x480 depth), and
the depth camera may sit beside the colour camera (``depth_to_color``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ovlift.datasets.base import Frame
from ovlift.datasets.toy import ToyConfig, ToyDataset, ToyScene
from ovlift.kernels.projection import scale_intrinsics
from ovlift.vocabularies import SCANNET20


@dataclass
class SensorView:
    """One posed view: the colour frame (labels and instances at colour size) and the depth
    frame (its ``depth`` at depth size, rendered from the depth camera)."""

    color: Frame
    depth: Frame


@dataclass
class LayoutScene:
    scene: ToyScene
    """Geometry: ``points``, ``faces``, ``normals``, ``point_instance``."""
    labels: np.ndarray
    """(N,) ScanNet-20 class per mesh vertex (-1: none)."""
    class_names: tuple[str, ...]
    views: list[SensorView]
    color_intrinsics: np.ndarray
    depth_intrinsics: np.ndarray
    depth_to_color: np.ndarray
    """(4, 4) depth camera -> colour camera."""


def layout_scene(
    num_frames: int = 4,
    color_hw: tuple[int, int] = (97, 130),
    depth_hw: tuple[int, int] = (48, 64),
    depth_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0),
    seed: int = 0,
) -> LayoutScene:
    """A small toy room seen by ``num_frames`` colour + depth views.

    The colour camera's intrinsics are the toy camera's scaled to ``color_hw``; the
    depth camera has its own (scaled to ``depth_hw``) and sits at ``depth_offset_m``
    in colour-camera coordinates (a translation: ``depth_to_color``).
    """
    config = ToyConfig(num_scenes=1, seed=seed, num_frames=num_frames, num_floor_objects=3, num_wall_objects=1)
    base = ToyDataset(config).build("toy_0000")

    def at(hw: tuple[int, int]) -> np.ndarray:
        k = torch.from_numpy(base.intrinsics.astype(np.float64))
        return scale_intrinsics(k, (base.height, base.width), hw).numpy()

    color_k, depth_k = at(color_hw), at(depth_hw)
    depth_to_color = np.eye(4)
    depth_to_color[:3, 3] = depth_offset_m
    color_scene = replace(base, intrinsics=color_k, height=color_hw[0], width=color_hw[1], depth_noise=0.0)
    depth_poses = base.cam_to_world @ depth_to_color
    depth_scene = replace(
        base, intrinsics=depth_k, height=depth_hw[0], width=depth_hw[1], cam_to_world=depth_poses, depth_noise=0.0
    )
    views = [SensorView(color_scene.render(i), depth_scene.render(i)) for i in range(num_frames)]
    labels = base.instance_label[base.point_instance]
    return LayoutScene(base, labels, SCANNET20.classes, views, color_k, depth_k, depth_to_color)
