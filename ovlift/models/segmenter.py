"""Mask segmenters (MaskFormer, Mask2Former from transformers) from a local folder.

A segmenter proposes Q masks per image: a pixel-to-mask probability map
(sigmoid of the mask logits, upsampled to the feature grid) and a class
distribution per mask over its own label set (the last logit is "no object").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ovlift.models.loading import load_pretrained

EXPECTED = "a Hugging Face MaskFormer or Mask2Former model saved with save_pretrained"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Proposals:
    probs: torch.Tensor
    """(Q, h, w) pixel-to-mask probabilities on the feature grid."""
    scores: torch.Tensor
    """(Q,) confidence that the mask is an object (1 - p(no object))."""
    classes: torch.Tensor
    """(Q,) the segmenter's own class of each mask."""


@dataclass
class LoadedSegmenter:
    model: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): v for k, v in self.model.config.id2label.items()}

    @torch.no_grad()
    def propose(self, images: torch.Tensor, feature_hw: tuple[int, int], short_side: int) -> list[Proposals]:
        """Masks of (B, H, W, 3) uint8 images, the input resized so its short side is ``short_side``."""
        b, h, w, _ = images.shape
        scale = short_side / min(h, w)
        size = (max(32, round(h * scale / 32) * 32), max(32, round(w * scale / 32) * 32))
        x = images.permute(0, 3, 1, 2).to(self.device, torch.float32) / 255.0
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=self.device)[:, None, None]
        std = torch.tensor(self.std, device=self.device)[:, None, None]
        out = self.model(pixel_values=(x - mean) / std)
        logits = F.interpolate(out.masks_queries_logits, size=feature_hw, mode="bilinear", align_corners=False)
        class_probs = out.class_queries_logits.softmax(-1)
        best = class_probs[..., :-1].max(-1)
        return [
            Proposals(logits[i].sigmoid().cpu(), (1 - class_probs[i, :, -1]).cpu(), best.indices[i].cpu())
            for i in range(b)
        ]


@lru_cache(maxsize=2)
def _load(path: str, what: str, device: str) -> LoadedSegmenter:
    from transformers import AutoModelForUniversalSegmentation

    model = load_pretrained(AutoModelForUniversalSegmentation, path, what, EXPECTED).eval().to(device)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    processor = Path(path) / "preprocessor_config.json"
    if processor.is_file():
        cfg = json.loads(processor.read_text())
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    return LoadedSegmenter(model, mean, std, torch.device(device))


def load_segmenter(path: str, what: str, device: torch.device | str = "cpu") -> LoadedSegmenter:
    """A segmenter, loaded once per (folder, device) per process."""
    return _load(str(path), what, str(device))


def mask_crops(color: torch.Tensor, masks: torch.Tensor, size: int, margin: float = 0.1) -> torch.Tensor:
    """(Q, 3, size, size) crops of an (H, W, 3) image around each (Q, h, w) boolean mask's
    bounding box (on the feature grid, scaled to the image, widened by ``margin``)."""
    height, width = color.shape[:2]
    mh, mw = masks.shape[1:]
    image = color.permute(2, 0, 1).float()
    crops = []
    for mask in masks:
        rows, cols = torch.nonzero(mask, as_tuple=True)
        if len(rows) == 0:
            crops.append(torch.zeros(3, size, size))
            continue
        top, bottom = rows.min().item() / mh * height, (rows.max().item() + 1) / mh * height
        left, right = cols.min().item() / mw * width, (cols.max().item() + 1) / mw * width
        pad_y, pad_x = (bottom - top) * margin, (right - left) * margin
        t, b = max(0, int(top - pad_y)), min(height, int(bottom + pad_y + 0.999))
        lo, r = max(0, int(left - pad_x)), min(width, int(right + pad_x + 0.999))
        crop = image[:, t : max(b, t + 1), lo : max(r, lo + 1)]
        crops.append(F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0])
    return torch.stack(crops) if crops else torch.zeros(0, 3, size, size)
