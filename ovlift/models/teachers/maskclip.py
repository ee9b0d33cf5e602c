"""``maskclip``: dense per-pixel CLIP features (MaskCLIP), CLIP2Scene's teacher.

Frames are resized so their short side is the model's input size (aspect kept,
rounded to whole patches; the position embeddings are interpolated), passed
through CLIP's image tower with MaskCLIP's last-block modification
(``ovlift.models.clip.maskclip_dense``) and upsampled bilinearly to the
feature grid.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ovlift.config import LocalPath
from ovlift.kernels.fusion import DenseFeatures
from ovlift.models.clip import load_clip
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput
from ovlift.models.text import TextEncoderConfig


class MaskCLIPConfig(TeacherConfig):
    clip_path: LocalPath
    """Local CLIP model folder (CLIPModel + tokenizer, save_pretrained layout)."""
    input_short_side: int | None = Field(None, ge=8)
    """Short side the frames are resized to (None: the model's image_size)."""
    templates: Literal["single", "ensemble"] = "ensemble"
    """Templates queries are embedded with (CLIP2Scene: the 85-template ensemble)."""


class MaskCLIPTeacher(Teacher[MaskCLIPConfig]):
    name = "maskclip"
    version = "1"

    def __init__(self, config: MaskCLIPConfig, device: torch.device, text, what: str) -> None:
        super().__init__(config, device, text, what)
        self.clip = load_clip(config.clip_path, what, device)

    @property
    def dim(self) -> int:
        return self.clip.dim

    @classmethod
    def model_folders(cls, config: MaskCLIPConfig) -> dict[str, str]:
        return {"clip_path": config.clip_path}

    @property
    def text_encoder(self) -> TextEncoderConfig:
        return TextEncoderConfig(kind="clip", path=self.config.clip_path, templates=self.config.templates)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        short = self.config.input_short_side or self.clip.image_size
        ps = self.clip.patch_size
        scale = short / min(height, width)
        return max(ps, round(height * scale / ps) * ps), max(ps, round(width * scale / ps) * ps)

    def __call__(self, batch: TeacherInput) -> DenseFeatures:
        images = batch.color.permute(0, 3, 1, 2).float()
        images = F.interpolate(
            images, size=self.input_size(*images.shape[2:]), mode="bilinear", align_corners=False, antialias=True
        )
        dense = self.clip.dense_features(images)
        dense = F.interpolate(dense, size=batch.feature_hw, mode="bilinear", align_corners=False)
        return DenseFeatures(dense.permute(0, 2, 3, 1).to(torch.float16).cpu())
