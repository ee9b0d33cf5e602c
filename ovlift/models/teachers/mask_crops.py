"""``mask-crops`` (formerly ``mask-clip``): a mask segmenter's proposals, each described by CLIP (CUS3D's 2D stage).

A segmenter (MaskFormer / Mask2Former) proposes masks; each mask's image crop is
encoded by CLIP. A pixel takes every mask whose probability exceeds
``mask_threshold``; with the ``vote`` rule (CUS3D's object-level filter) each of
those masks is classified against the vocabulary, the pixel's label is the vote's
winner, masks of other labels are dropped and the rest averaged. The ``largest``
rule (the ablation) keeps only the largest covering mask. Output is in the masks
encoding: per pixel its kept masks with equal weights.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ovlift.config import LocalPath
from ovlift.kernels.fusion import MaskFeatures
from ovlift.models.clip import load_clip
from ovlift.models.segmenter import load_segmenter, mask_crops
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput, top_k_masks
from ovlift.models.text import TextEncoderConfig
from ovlift.vocabularies import get_vocabulary


class MaskCropsConfig(TeacherConfig):
    segmenter_path: LocalPath
    """Local MaskFormer or Mask2Former folder (save_pretrained layout)."""
    clip_path: LocalPath
    """Local CLIP folder that describes each mask crop."""
    vocabulary: str = "scannet20"
    """Label set the masks are classified against for the vote."""
    templates: Literal["single", "ensemble"] = "single"
    """Templates the vocabulary (and later queries) are embedded with."""
    mask_threshold: float = Field(0.35, gt=0, lt=1)
    """A pixel belongs to a mask where its probability exceeds this (CUS3D: 0.35)."""
    max_masks: int = Field(32, ge=1)
    """Most confident proposals kept per frame."""
    overlap: Literal["vote", "largest"] = "vote"
    """Overlapping masks at a pixel: CUS3D's label vote, or the largest mask wins."""
    segmenter_short_side: int = Field(384, ge=32)
    """Short side of the segmenter's input."""


class MaskCropsTeacher(Teacher[MaskCropsConfig]):
    name = "mask-crops"
    version = "1"
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
        ids, weights, embeddings, offset = [], [], [], 0
        for b, prop in enumerate(proposals):
            keep = prop.scores.topk(min(cfg.max_masks, len(prop.scores))).indices
            masks = prop.probs[keep] > cfg.mask_threshold
            keep, masks = keep[masks.flatten(1).any(1)], masks[masks.flatten(1).any(1)]
            emb = self.clip.encode_images(mask_crops(batch.color[b], masks, self.clip.image_size)).cpu().float()
            labels = prompt_class[(emb @ prompts.T).argmax(1)] if len(emb) else torch.zeros(0, dtype=torch.long)
            w = pixel_weights(masks, labels, prop.probs[keep], cfg.overlap, len(self.vocabulary.classes))
            frame_ids, frame_w = top_k_masks(w, cfg.top_k)
            ids.append(torch.where(frame_ids >= 0, frame_ids + offset, -1))
            weights.append(frame_w)
            embeddings.append(emb)
            offset += len(emb)
        return MaskFeatures(torch.stack(ids), torch.stack(weights), torch.cat(embeddings).to(torch.float16))


def pixel_weights(
    masks: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, rule: str, num_classes: int
) -> torch.Tensor:
    """(Q, h, w) weight of each mask at each pixel (0 = not used there).

    ``vote``: among the masks covering a pixel, the label with most masks wins
    (ties: the larger summed probability); masks of other labels are dropped and
    the rest weigh equally. ``largest``: the covering mask of largest area alone.
    """
    cover = masks.float()
    if len(masks) == 0:
        return cover
    if rule == "largest":
        area = masks.flatten(1).sum(1).float()
        score = torch.where(masks, area[:, None, None], torch.full_like(cover, -1.0))
        winner = score.argmax(0)
        return (torch.arange(len(masks))[:, None, None] == winner[None]).float() * cover
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()  # (Q, K)
    votes = torch.einsum("qk,qhw->khw", onehot, cover)
    tiebreak = torch.einsum("qk,qhw->khw", onehot, cover * probs) / (probs.numel() + 1.0)
    winner = (votes + tiebreak).argmax(0)  # (h, w)
    return cover * (labels[:, None, None] == winner[None]).float()
