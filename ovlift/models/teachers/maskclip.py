"""``maskclip``: dense per-pixel CLIP features (MaskCLIP), CLIP2Scene's teacher.

Frames are resized so their short side is the model's input size (aspect kept,
rounded to whole patches; the position embeddings are interpolated), passed
through CLIP's image tower with MaskCLIP's last-block modification
(``ovlift.models.clip.maskclip_dense``) and upsampled bilinearly to the
feature grid. With ``normalize`` (the default) each patch feature is L2-normalised
before upsampling, as CLIP2Scene's ``cls_seg`` does before it upsamples the class
logits (so argmax labels are CLIP2Scene's), and each stored pixel again after it.

MaskCLIP's two refinements (its paper's key smoothing and prompt denoising, its
mmseg head's ``refine_output``) are options, **off by default**: CLIP2Scene's
released ``maskclip_model.py`` has ``refine_output`` (ks_thresh 1, pd_thresh 0.5)
but its call is commented out, so CLIP2Scene's labels come without them. Both act
on class scores over a ``vocabulary`` on the patch grid, before upsampling
(``refine_patches``):

* prompt denoising: confidence = softmax over classes of ``confidence_scale`` x
  cosine; a class whose confidence is below ``prompt_denoising_threshold`` at every
  patch of the image gets logit -100 (is removed from that image);
* key smoothing: where a patch's top probability is below
  ``key_smoothing_threshold``, its probabilities become sum_j cos(k_i, k_j) p_j over
  the image's patches, k the last block's keys (``maskclip_dense(with_keys=True)``).

Where the released code differs: MaskCLIP's ViT path also passes the keys through
the attention's out_proj, and its ``F.normalize(k, p=2)`` (no ``dim``) normalises
each key channel over the patches rather than each patch's key, so its weights are
not the cosine similarities its comment ("L2 distance") and the paper describe; we
use the paper's cosine of k_proj keys. An image where denoising would remove every
class keeps its most confident one (the released code would leave all at -100).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from ovlift.config import ModelPath
from ovlift.kernels.fusion import DenseFeatures
from ovlift.models.clip import load_clip
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput
from ovlift.models.text import TextEncoderConfig
from ovlift.vocabularies import get_vocabulary

REMOVED_LOGIT = -100.0
"""The logit (a cosine, so far below any real one) prompt denoising gives a removed class (MaskCLIP's)."""


class MaskCLIPConfig(TeacherConfig):
    clip_path: ModelPath
    """Local CLIP model folder (CLIPModel + tokenizer, save_pretrained layout)."""
    input_short_side: int | None = Field(None, ge=8)
    """Short side the frames are resized to (None: the model's image_size)."""
    templates: Literal["single", "ensemble"] = "ensemble"
    """Templates queries are embedded with (CLIP2Scene: the 85-template ensemble)."""
    normalize: bool = True
    """L2-normalise each pixel's feature (CLIP2Scene normalises them; False: CLIP's raw scale)."""
    key_smoothing: bool = False
    """MaskCLIP's key smoothing (paper and refine_output; off in CLIP2Scene's code). Needs ``vocabulary``."""
    key_smoothing_threshold: float = Field(1.0, gt=0, le=1)
    """Patches whose top class probability is below this are smoothed (MaskCLIP's ks_thresh: 1.0)."""
    prompt_denoising: bool = False
    """MaskCLIP's prompt denoising (paper and refine_output; off in CLIP2Scene's code). Needs ``vocabulary``."""
    prompt_denoising_threshold: float = Field(0.5, gt=0, le=1)
    """A class below this confidence at every patch of an image is removed there (MaskCLIP's pd_thresh: 0.5)."""
    confidence_scale: float = Field(100.0, gt=0)
    """Class probabilities are softmax(confidence_scale x cosine) (MaskCLIP: 100, CLIP's logit scale)."""
    vocabulary: str | None = None
    """Classes the refinements score patches over, e.g. ``clip2scene-nuscenes16`` (unused without them)."""

    @model_validator(mode="after")
    def _refinements_need_a_vocabulary(self) -> MaskCLIPConfig:
        if (self.key_smoothing or self.prompt_denoising) and self.vocabulary is None:
            raise ValueError(
                "key_smoothing and prompt_denoising score patches over classes: set 'vocabulary' "
                "(e.g. 'clip2scene-nuscenes16')"
            )
        return self


class MaskCLIPTeacher(Teacher[MaskCLIPConfig]):
    name = "maskclip"
    version = "2"  # 2: features L2-normalised per pixel by default (normalize); key smoothing, prompt denoising

    def __init__(self, config: MaskCLIPConfig, device: torch.device, text, what: str) -> None:
        super().__init__(config, device, text, what)
        self.clip = load_clip(config.clip_path, what, device)
        self.vocabulary = get_vocabulary(config.vocabulary) if self.refines else None

    @property
    def refines(self) -> bool:
        return self.config.key_smoothing or self.config.prompt_denoising

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

    def patch_features(self, color: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, H, W, 3) uint8 frames -> MaskCLIP features (B, C, gh, gw), normalised under
        ``normalize``, and the last block's keys (B, D, gh, gw) when key smoothing needs them."""
        images = color.permute(0, 3, 1, 2).float()
        images = F.interpolate(
            images, size=self.input_size(*images.shape[2:]), mode="bilinear", align_corners=False, antialias=True
        )
        keys = None
        if self.config.key_smoothing:
            dense, keys = self.clip.dense_features(images, with_keys=True)
        else:
            dense = self.clip.dense_features(images)
        return (F.normalize(dense, dim=1) if self.config.normalize else dense), keys

    def refine(self, dense: torch.Tensor, keys: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``refine_patches`` on (B, C, gh, gw) patch features over the vocabulary, embedded
        with this teacher's text encoder: (refined features (B, C, gh, gw), scores (B, K, gh, gw))."""
        cfg = self.config
        prompts = self.text(self.text_encoder, list(self.vocabulary.prompts)).to(dense.device, torch.float32)
        prompt_class = torch.tensor(self.vocabulary.prompt_class, device=dense.device)
        b, c, h, w = dense.shape
        features, scores = refine_patches(
            dense.flatten(2).transpose(1, 2).float(),
            prompts,
            prompt_class,
            len(self.vocabulary.classes),
            keys=None if keys is None else keys.flatten(2).transpose(1, 2).float(),
            key_smoothing_threshold=cfg.key_smoothing_threshold if cfg.key_smoothing else None,
            prompt_denoising_threshold=cfg.prompt_denoising_threshold if cfg.prompt_denoising else None,
            confidence_scale=cfg.confidence_scale,
        )
        return features.transpose(1, 2).reshape(b, c, h, w), scores.transpose(1, 2).reshape(b, -1, h, w)

    def __call__(self, batch: TeacherInput) -> DenseFeatures:
        dense, keys = self.patch_features(batch.color)
        if self.refines:
            dense = self.refine(dense, keys)[0]
        dense = F.interpolate(dense, size=batch.feature_hw, mode="bilinear", align_corners=False)
        if self.config.normalize:
            dense = F.normalize(dense, dim=1)
        return DenseFeatures(dense.permute(0, 2, 3, 1).to(torch.float16).cpu())


def class_logits(features: torch.Tensor, prompts: torch.Tensor, prompt_class: torch.Tensor, num_classes: int):
    """(B, N, K): each patch's cosine to each class, the best of the class's prompts
    (the rule ``kernels.classify`` labels with); a class without prompts gets -inf."""
    cosine = F.normalize(features, dim=-1) @ prompts.T  # (B, N, P)
    logits = cosine.new_full((*cosine.shape[:-1], num_classes), float("-inf"))
    return logits.scatter_reduce(-1, prompt_class.expand_as(cosine), cosine, "amax")


def prompt_denoising(logits: torch.Tensor, threshold: float, confidence_scale: float) -> torch.Tensor:
    """(B, N, K) class logits with every class whose confidence (softmax over classes of
    ``confidence_scale`` x logit) stays below ``threshold`` at all N patches of its image set
    to ``REMOVED_LOGIT``; an image's most confident class is always kept."""
    confidence = torch.softmax(confidence_scale * logits, dim=-1).amax(dim=1)  # (B, K)
    removed = confidence < threshold
    removed[torch.arange(len(removed), device=removed.device), confidence.argmax(dim=1)] = False
    return logits.masked_fill(removed[:, None, :], REMOVED_LOGIT)


def key_smoothing(probabilities: torch.Tensor, keys: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, N, K) class probabilities, those of patches whose top probability is below
    ``threshold`` replaced by sum_j cos(k_i, k_j) p_j over the image's patches ((B, N, D) keys).
    The weights are neither softmaxed nor row-normalised (as MaskCLIP's), so the smoothed
    rows are scores, not probabilities; only their argmax is used."""
    k = F.normalize(keys, dim=-1)
    smoothed = (k @ k.transpose(1, 2)) @ probabilities
    unsure = probabilities.amax(dim=-1, keepdim=True) < threshold
    return torch.where(unsure, smoothed, probabilities)


def refine_patches(
    features: torch.Tensor,
    prompts: torch.Tensor,
    prompt_class: torch.Tensor,
    num_classes: int,
    *,
    keys: torch.Tensor | None = None,
    key_smoothing_threshold: float | None = None,
    prompt_denoising_threshold: float | None = None,
    confidence_scale: float = 100.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MaskCLIP's ``refine_output`` on (B, N, C) patch features, then back to features.

    ``prompts`` are (P, C) unit text embeddings, ``prompt_class`` (P,) their classes.
    Scores: class logits (``class_logits``), prompt-denoised when a threshold is given,
    then turned into probabilities and key-smoothed when a threshold (and (B, N, D)
    ``keys``) is given. The refined class of a patch is its scores' argmax. Smoothing
    weights can be negative, so a removed class (probability 0 everywhere) could
    otherwise out-score the rest after smoothing; removed classes stay removed.

    Returned features: a patch whose refined class is the class its own feature
    already has (its best-prompt class) keeps its feature; any other patch gets the
    unit embedding of the refined class's prompt nearest to its feature, times its
    feature's norm. So every output feature's class under ``kernels.classify`` (cosine
    to the same prompts) is its refined class: a kept feature's by definition, a
    replaced one's because its cosine to that prompt is 1, which no other prompt
    exceeds (barring an identical prompt embedding). The output stays in the text
    space -- the pipeline lifts features and classifies them by cosine -- and, unlike
    a probability-weighted mix of class embeddings, whose cosine argmax can move to a
    class near several likely ones, it keeps that refined label exactly; the norm keeps
    replaced patches on the scale of the others when features are not normalised.

    Returns (features (B, N, C), scores (B, N, K)).
    """
    logits = class_logits(features, prompts, prompt_class, num_classes)
    scores = logits
    if prompt_denoising_threshold is not None:
        scores = prompt_denoising(scores, prompt_denoising_threshold, confidence_scale)
    if key_smoothing_threshold is not None:
        if keys is None:
            raise ValueError("key smoothing needs the patches' keys")
        smoothed = key_smoothing(torch.softmax(confidence_scale * scores, dim=-1), keys, key_smoothing_threshold)
        scores = smoothed.masked_fill(scores <= REMOVED_LOGIT, float("-inf"))  # removed classes stay removed
    refined = scores.argmax(dim=-1)  # (B, N)
    cosine = F.normalize(features, dim=-1) @ prompts.T  # (B, N, P)
    of_refined = prompt_class == refined[..., None]  # (B, N, P)
    nearest = cosine.masked_fill(~of_refined, float("-inf")).argmax(dim=-1)  # (B, N)
    replacement = prompts[nearest] * features.norm(dim=-1, keepdim=True)
    agrees = (logits.argmax(dim=-1) == refined)[..., None]
    return torch.where(agrees, features, replacement), scores
