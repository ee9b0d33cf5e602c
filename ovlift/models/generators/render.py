"""``render``: single toy objects with exact masks, for CI and controlled studies.

Image i of a class is a toy room holding one object of that class (``wall`` and
``floor``: an empty room), seen by one camera aimed at it, ray cast exactly
(``ovlift.datasets.toy.object_view``, seeded by (seed, class, i)). The pseudo mask
is the object's true mask, so a capability measured on these images is the
teacher's own recognition rate, with no pseudo-mask error in it (SAS's diffusion
+ SAM masks have some; see ``diffusion-sam``). The images also carry true labels
and instances, which simulated teachers such as ``synthetic`` read. Classes with
no toy template (``ceiling``, ``shower curtain``) get no images.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from pydantic import Field

from ovlift.datasets.furniture import FLOOR_TEMPLATES, WALL_TEMPLATES
from ovlift.datasets.materials import Appearance
from ovlift.datasets.toy import object_view
from ovlift.models.generators.base import GeneratedImages, GeneratorConfig, ImageGenerator
from ovlift.progress import progress
from ovlift.vocabularies import SCANNET20

RENDERABLE = ("wall", "floor", *FLOOR_TEMPLATES, *WALL_TEMPLATES)
"""Classes the toy world can draw."""


class RenderConfig(GeneratorConfig):
    image_height: int = Field(120, ge=8)
    """Rendered image height in pixels."""
    image_width: int = Field(160, ge=8)
    """Rendered image width in pixels."""
    fov_deg: float = Field(70.0, gt=10, lt=170)
    """Horizontal field of view."""
    seed: int = 0
    """Image i of class c is drawn from (seed, c, i)."""
    appearance: Appearance = "materials"
    """The toy rooms' look (``ToyConfig.appearance``): ``materials`` (v3) or ``class-colour`` (v2)."""


class RenderGenerator(ImageGenerator[RenderConfig]):
    name = "render"
    version = "3"  # 3: toy appearance v3 (materials); 2: walls aimed at along their own axis
    reads_ground_truth = "exact masks of the rendered objects"

    def generate(self, class_name: str) -> GeneratedImages:
        cfg = self.config
        h, w = cfg.image_height, cfg.image_width
        if class_name not in RENDERABLE:
            empty = torch.zeros((0, h, w), dtype=torch.bool)
            return GeneratedImages(class_name, torch.zeros((0, h, w, 3), dtype=torch.uint8), empty)
        salt = int.from_bytes(hashlib.sha256(class_name.encode()).digest()[:4], "little")
        frames = [
            object_view(class_name, (cfg.seed, salt, i), h, w, cfg.fov_deg, cfg.appearance).render(0)
            for i in progress(range(cfg.images_per_class), f"render '{class_name}'", unit="image")
        ]
        labels = torch.from_numpy(np.stack([f.labels for f in frames]).astype(np.int64))
        return GeneratedImages(
            class_name=class_name,
            images=torch.from_numpy(np.stack([f.color for f in frames])),
            pseudo_masks=labels == SCANNET20.index(class_name),
            labels=labels,
            instances=torch.from_numpy(np.stack([f.instances for f in frames]).astype(np.int64)),
            depth=torch.from_numpy(np.stack([f.depth for f in frames])),
            label_names=SCANNET20.classes,
        )
