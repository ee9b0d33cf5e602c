"""``caption-aligned``: a segmenter's masks, described in words (SAS's model alignment).

Teachers with different embedding spaces meet in one text space: each mask's
label (from the segmenter's own label set) becomes a caption -- a captioner
(BLIP, transformers) describes the mask's crop and the caption's head noun is
replaced by the segmenter's label -- and the caption is embedded by the shared
text encoder. A pixel takes the caption embedding of its most probable mask.

Noun replacement is a heuristic (no tagger): the noun of the first noun phrase
is the last word before a preposition, verb or conjunction that follows the
first article; when that fails the label is prepended ("chair: <caption>").
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import torch
from pydantic import Field

from ovlift.config import LocalPath
from ovlift.kernels.fusion import MaskFeatures
from ovlift.models.loading import load_pretrained
from ovlift.models.segmenter import load_segmenter, mask_crops
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput, top_k_masks
from ovlift.models.text import TextEncoderConfig, encoder_folder, load_text_encoder

CAPTIONER_EXPECTED = "a Hugging Face BLIP captioning model with its processor, saved with save_pretrained"
ARTICLES = {"a", "an", "the"}
PHRASE_END = {
    "on",
    "in",
    "with",
    "next",
    "near",
    "at",
    "of",
    "and",
    "or",
    "is",
    "are",
    "sitting",
    "standing",
    "lying",
    "hanging",
    "that",
    "which",
    "by",
    "under",
    "over",
    "behind",
    "beside",
    "against",
    "inside",
    "from",
    "to",
}


class CaptionAlignedConfig(TeacherConfig):
    segmenter_path: LocalPath
    """Local MaskFormer or Mask2Former folder; its id2label names the masks."""
    captioner_path: LocalPath
    """Local BLIP captioning folder (model + processor)."""
    text: TextEncoderConfig = TextEncoderConfig()
    """The shared text space the captions are embedded in."""
    mask_threshold: float = Field(0.5, gt=0, lt=1)
    """A pixel belongs to a mask where its probability exceeds this."""
    max_masks: int = Field(16, ge=1)
    """Most confident proposals kept per frame."""
    caption_tokens: int = Field(20, ge=1)
    """Longest caption, in tokens."""
    segmenter_short_side: int = Field(384, ge=32)
    """Short side of the segmenter's input."""


def replace_noun(caption: str, label: str) -> str:
    words = caption.strip().split()
    lower = [re.sub(r"[^a-z]", "", w.lower()) for w in words]
    if label.lower() in " ".join(lower):
        return caption.strip()
    start = next((i + 1 for i, w in enumerate(lower) if w in ARTICLES), None)
    if start is not None and start < len(words):
        end = next((j for j in range(start, len(words)) if lower[j] in PHRASE_END), len(words))
        if end > start:
            return " ".join(words[: end - 1] + [label] + words[end:])
    return f"{label}: {caption.strip()}" if caption.strip() else label


class CaptionAlignedTeacher(Teacher[CaptionAlignedConfig]):
    name = "caption-aligned"
    version = "1"
    produces_masks = True

    def __init__(self, config: CaptionAlignedConfig, device: torch.device, text, what: str) -> None:
        super().__init__(config, device, text, what)
        self.segmenter = load_segmenter(config.segmenter_path, what, device)
        self.captioner, self.processor = _load_captioner(config.captioner_path, what, str(device))
        self.encoder = load_text_encoder(config.text, str(device))

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @classmethod
    def model_folders(cls, config: CaptionAlignedConfig) -> dict[str, str]:
        return {
            "segmenter_path": config.segmenter_path,
            "captioner_path": config.captioner_path,
            "text": encoder_folder(config.text),
        }

    @property
    def text_encoder(self) -> TextEncoderConfig:
        return self.config.text

    @torch.no_grad()
    def captions(self, crops: torch.Tensor) -> list[str]:
        if len(crops) == 0:
            return []
        images = [c.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy() for c in crops]
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        out = self.captioner.generate(**inputs, max_new_tokens=self.config.caption_tokens)
        return self.processor.batch_decode(out, skip_special_tokens=True)

    def __call__(self, batch: TeacherInput) -> MaskFeatures:
        cfg = self.config
        id2label = self.segmenter.id2label
        proposals = self.segmenter.propose(batch.color, batch.feature_hw, cfg.segmenter_short_side)
        ids, weights, embeddings, offset = [], [], [], 0
        for b, prop in enumerate(proposals):
            keep = prop.scores.topk(min(cfg.max_masks, len(prop.scores))).indices
            probs = prop.probs[keep]
            masks = probs > cfg.mask_threshold
            present = masks.flatten(1).any(1)
            keep, probs, masks = keep[present], probs[present], masks[present]
            crops = mask_crops(batch.color[b], masks, 384)
            texts = [replace_noun(c, id2label[int(k)]) for c, k in zip(self.captions(crops), prop.classes[keep])]
            emb = self.encoder.encode(texts) if texts else torch.zeros(0, self.dim)
            frame_ids, frame_w = top_k_masks(probs * masks, 1)  # the most probable mask wins
            ids.append(torch.where(frame_ids >= 0, frame_ids + offset, -1))
            weights.append(frame_w)
            embeddings.append(emb)
            offset += len(emb)
        return MaskFeatures(torch.stack(ids), torch.stack(weights), torch.cat(embeddings).to(torch.float16))


@lru_cache(maxsize=2)
def _load_captioner(path: str, what: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoProcessor, BlipForConditionalGeneration

    model = load_pretrained(BlipForConditionalGeneration, path, what, CAPTIONER_EXPECTED).eval().to(device)
    processor = load_pretrained(AutoProcessor, path, what, CAPTIONER_EXPECTED)
    return model, processor
