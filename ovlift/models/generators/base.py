"""What an image generator is: a class name in, m images with a pseudo mask of that class out.

SAS measures how well each 2D teacher recognises each class on images it did not
see: a generator draws m images per class and a pseudo mask of the class in each;
the ``capability`` stage runs every teacher on them and scores the teacher's mask
of the class against the pseudo mask. Its Config carries the capability stage's
own fields too (as a teacher's Config carries ``extract2d``'s), so a plan entry
``capability: {implementation: <generator>, ...}`` is one typed config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from pydantic import Field

from ovlift.config import FrozenConfig, ModelPath, Plugin, runtime_field


class GeneratorConfig(FrozenConfig):
    """Fields of every generator, which are the ``capability`` stage's own."""

    teachers: tuple[str, ...] = ()
    """extract2d variants to measure, in this order (empty: every one the plan configures)."""
    vocabulary: str = "sas-scannet21"
    """Classes whose capability is measured and the teachers' masks are labelled with (``fuse`` uses the same)."""
    templates: Literal["single", "ensemble"] = "single"
    """Prompt templates of the class embeddings that label the teachers' pixels."""
    zero_classes: tuple[str, ...] = ("other",)
    """Classes given capability 0 without drawing images (SAS sets 'other' to 0)."""
    images_per_class: int = Field(50, ge=1)
    """m, images drawn per class (SAS's code: 50)."""
    iou: Literal["mean", "pooled"] = "mean"
    """Capability of a class: mean of per-image IoU (the paper's Eq. 3/4) or IoU pooled
    over the class's images (SAS's released ``cal_miou.py``)."""
    cached_outputs: dict[str, ModelPath] = {}
    """``cached`` teachers only: teacher variant -> folder holding its outputs on the exported
    images, in that teacher's own ``pattern`` (scene ``capability-<class, spaces as '-'>``, frame
    ``image-NNNNNN``)."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's."""


@dataclass
class GeneratedImages:
    """m images of one class and, in each, the pseudo mask the teachers are scored against."""

    class_name: str
    images: torch.Tensor
    """(m, H, W, 3) uint8."""
    pseudo_masks: torch.Tensor
    """(m, H, W) bool: where the class is, as the generator believes."""
    coarse_masks: torch.Tensor | None = None
    """(m, H, W) bool: the thresholded attention before SAM (diffusion-sam)."""
    points: torch.Tensor | None = None
    """(m, P, 2) int64 (x, y) pixel prompts given to SAM (diffusion-sam)."""
    labels: torch.Tensor | None = None
    """(m, H, W) int64 true class per pixel, indexing ``label_names``, -1 none (render only:
    what a simulated teacher such as ``synthetic`` reads)."""
    instances: torch.Tensor | None = None
    """(m, H, W) int64 true instance per pixel (render only)."""
    depth: torch.Tensor | None = None
    """(m, H, W) float32 metres (render only)."""
    label_names: tuple[str, ...] | None = None
    """The label set ``labels`` index."""


GeneratorConfigT = TypeVar("GeneratorConfigT", bound=GeneratorConfig)


class ImageGenerator(ABC, Plugin[GeneratorConfigT]):
    """A loaded generator for one config: ``class X(ImageGenerator[XConfig])``; plans name it by
    ``name`` (``capability: {implementation: <name>}``); bump ``version`` when its images or masks
    change for the same config."""

    def __init__(self, config: GeneratorConfigT, device: torch.device, what: str) -> None:
        self.config = config
        self.device = device
        self.what = what
        """Who this is, for messages."""

    @abstractmethod
    def generate(self, class_name: str) -> GeneratedImages:
        """``config.images_per_class`` images of ``class_name``; image i is seeded by i."""

    @classmethod
    def model_folders(cls, config: GeneratorConfigT) -> dict[str, str]:
        """Config field -> model folder (or file) it loads (fingerprinted by content)."""
        return {}
