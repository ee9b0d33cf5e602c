"""``mask-crops`` (formerly ``mask-clip``): a mask segmenter's proposals, each described by CLIP (CUS3D's 2D stage).

A segmenter (MaskFormer / Mask2Former) proposes masks with per-pixel
probabilities; each mask's image crop is encoded by CLIP and labelled with the
vocabulary class nearest to its embedding. CUS3D's 2D filter
(``kernels.mask_vote``) then decides which candidate masks a pixel averages:
``overlap: vote`` is the paper's, ``weighted`` and ``all`` are what the released
code does, ``largest`` is an ablation. Output is in the masks encoding.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ovlift.config import ModelPath
from ovlift.kernels.classify import classify
from ovlift.kernels.fusion import MaskFeatures
from ovlift.models.clip import load_clip
from ovlift.models.segmenter import load_segmenter, mask_crops
from ovlift.models.teachers.base import FrameMasks, MaskVoteConfig, Teacher, TeacherInput, voted_mask_features
from ovlift.models.text import TextEncoderConfig
from ovlift.vocabularies import get_vocabulary


class MaskCropsConfig(MaskVoteConfig):
    segmenter_path: ModelPath
    """Local MaskFormer or Mask2Former folder (save_pretrained layout)."""
    clip_path: ModelPath
    """Local CLIP folder that describes each mask crop."""
    vocabulary: str = "scannet20"
    """Label set the masks are classified against for the vote."""
    templates: Literal["single", "ensemble"] = "single"
    """Templates the vocabulary (and later queries) are embedded with."""
    max_masks: int = Field(32, ge=1)
    """Most confident proposals kept per frame."""
    segmenter_short_side: int = Field(384, ge=32)
    """Short side of the segmenter's input."""


class MaskCropsTeacher(Teacher[MaskCropsConfig]):
    name = "mask-crops"
    version = "2"  # 2: vote ties exactly by summed probability; beyond top_k, the most probable masks
    stable_id = "mask-clip"  # its name until it was renamed; keeps its caches valid
    produces_masks = True

    def __init__(self, config: MaskCropsConfig, device: torch.device, text, what: str) -> None:
        super().__init__(config, device, text, what)
        self.segmenter = load_segmenter(config.segmenter_path, what, device)
        self.clip = load_clip(config.clip_path, what, device)
        self.vocabulary = get_vocabulary(config.vocabulary)

    @property
    def dim(self) -> int:
        return self.clip.dim

    @classmethod
    def model_folders(cls, config: MaskCropsConfig) -> dict[str, str]:
        return {"segmenter_path": config.segmenter_path, "clip_path": config.clip_path}

    @property
    def text_encoder(self) -> TextEncoderConfig:
        return TextEncoderConfig(kind="clip", path=self.config.clip_path, templates=self.config.templates)

    def __call__(self, batch: TeacherInput) -> MaskFeatures:
        cfg = self.config
        prompts = self.text(self.text_encoder, list(self.vocabulary.prompts)).to(torch.float32)
        prompt_class = torch.tensor(self.vocabulary.prompt_class)
        proposals = self.segmenter.propose(batch.color, batch.feature_hw, cfg.segmenter_short_side)
        frames = []
        for b, prop in enumerate(proposals):
            probs = prop.probs[prop.scores.topk(min(cfg.max_masks, len(prop.scores))).indices]
            probs = probs[(probs > cfg.mask_threshold).flatten(1).any(1)]  # masks that cover some pixel
            crops = mask_crops(batch.color[b], probs > cfg.mask_threshold, self.clip.image_size)
            emb = self.clip.encode_images(crops).cpu().float()
            frames.append(FrameMasks(probs, classify(emb, prompts, prompt_class)[1], emb))
        return voted_mask_features(frames, cfg, len(self.vocabulary.classes))
