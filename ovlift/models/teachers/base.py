"""What a 2D teacher is: frames in, per-pixel features in a text-embedding space out.

A teacher returns either dense maps (``DenseFeatures``) or, for mask-based
teachers, per-pixel mask ids and weights plus one embedding per mask
(``MaskFeatures``), which is what they really produce and far smaller to store.
Teachers whose masks overlap pick each pixel's masks with CUS3D's 2D filter
(``MaskVoteConfig``, ``voted_mask_features``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ovlift.config import FrozenConfig, Plugin, added_field, runtime_field
from ovlift.kernels.fusion import DenseFeatures, MaskFeatures
from ovlift.kernels.mask_vote import Fallback, Overlap, mask_weights
from ovlift.models.loading import model_inputs
from ovlift.models.text import TextEmbedder, TextEncoderConfig


class TeacherConfig(FrozenConfig):
    """Fields every teacher has (the ``extract2d`` stage's own)."""

    feature_height: int = Field(240, ge=1)
    """Rows of the stored feature maps (OpenScene: 240 of ScanNet's 480)."""
    feature_width: int = Field(320, ge=1)
    """Columns of the stored feature maps."""
    frame_stride: int = Field(1, ge=1)
    """Extract every k-th frame (the others get no features from this teacher)."""
    encoding: Literal["dense", "dense-int8", "dense-pca", "masks"] = "dense"
    """Storage: ``dense`` (T, h, w, C) float16; ``dense-int8`` (int8 codes and a float16
    scale per pixel: about half of ``dense``); ``dense-pca`` (float16 coefficients on a
    per-scene basis of ``pca_channels`` components: about C / P times smaller); or ``masks``
    (top-k mask ids and weights per pixel + one embedding per mask; mask-based teachers only).
    The compact two cost accuracy: ``docs/stages/extract2d.md`` states how much."""
    top_k: int = Field(4, ge=1)
    """Masks kept per pixel in the ``masks`` encoding; where the 2D filter keeps more
    (``overlap: all``, say), the most probable ``top_k`` of them, in either encoding."""
    pca_channels: int = added_field(64, ge=1)
    """Components of the ``dense-pca`` basis (at most C)."""
    pca_fit_frames: int = added_field(16, ge=1)
    """``dense-pca``: frames, spread evenly over the extracted ones, whose pixels fit the basis."""
    maps: Literal["store", "stream"] = runtime_field("store")
    """``store`` the per-frame maps, or ``stream`` them: store only what describes them
    (and the PCA basis), and let ``project`` and ``denoise`` run the teacher on the frames
    they read. The same results either way, so a group written one way is a cache hit for
    the other (``docs/stages/extract2d.md``)."""
    frames_per_batch: int = runtime_field(4, ge=1)
    """Frames sent through the model at once."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's."""


@dataclass
class TeacherInput:
    scene_id: str
    frame_index: np.ndarray
    """(B,) indices of the frames in the scene's input."""
    color: torch.Tensor
    """(B, H, W, 3) uint8."""
    feature_hw: tuple[int, int]
    depth: torch.Tensor | None = None
    """(B, H, W) metres, if the scene has depth."""
    labels: torch.Tensor | None = None
    """(B, H, W) ground-truth classes (synthetic data only)."""
    instances: torch.Tensor | None = None
    """(B, H, W) ground-truth instances (synthetic data only)."""
    class_names: tuple[str, ...] | None = None
    """The scene's label set (what ``labels`` index)."""
    frame_names: tuple[str, ...] = ()
    """Source name of each frame (e.g. ``seq-01/frame-000010``)."""


class MaskVoteConfig(TeacherConfig):
    """Fields of teachers whose masks overlap: CUS3D's 2D filter (``kernels.mask_vote``)."""

    mask_threshold: float = Field(0.35, gt=0, lt=1)
    """A mask is a candidate at a pixel where its probability exceeds this (CUS3D: 0.35)."""
    overlap: Overlap = "vote"
    """Candidates a pixel averages: ``vote`` (the paper: the most voted label's), ``weighted``
    (the code's probability-weighted vote), ``all`` (what the code computes), ``largest``."""
    fallback: Fallback = "none"
    """A pixel without candidates: no feature, or ``image-mean`` (the code: the mean mask embedding)."""


@dataclass
class FrameMasks:
    """One frame's masks, as a segmenter (or a simulation of one) proposes them."""

    probs: torch.Tensor
    """(Q, h, w) probability of each mask at each pixel."""
    labels: torch.Tensor
    """(Q,) class of each mask: its embedding's nearest class embedding."""
    embeddings: torch.Tensor
    """(Q, C) one feature per mask."""


def voted_mask_features(frames: list[FrameMasks], config: MaskVoteConfig, num_classes: int) -> MaskFeatures:
    """The batch's masks encoding: per frame the 2D filter's weights, kept to the ``top_k``
    most probable masks per pixel, plus the frame's mean embedding as one more mask
    under ``fallback: image-mean`` (a frame without masks has none)."""
    ids, weights, embeddings, offset = [], [], [], 0
    for frame in frames:
        w = mask_weights(
            frame.probs, frame.labels, config.mask_threshold, config.overlap, num_classes, config.fallback, config.top_k
        )
        emb = frame.embeddings.float()
        if config.fallback == "image-mean" and len(emb):
            emb = torch.cat([emb, emb.mean(0, keepdim=True)])
        frame_ids, frame_w = top_k_masks(w[: len(emb)], config.top_k)
        ids.append(torch.where(frame_ids >= 0, frame_ids + offset, -1))
        weights.append(frame_w)
        embeddings.append(emb)
        offset += len(emb)
    return MaskFeatures(torch.stack(ids), torch.stack(weights), torch.cat(embeddings).to(torch.float16))


TeacherConfigT = TypeVar("TeacherConfigT", bound=TeacherConfig)


class Teacher(ABC, Plugin[TeacherConfigT]):
    """A loaded 2D model (or simulation) for one config: ``class X(Teacher[XConfig])``.

    A plan names it by ``name`` (``extract2d: {variant: {implementation: <name>, ...}}``);
    ``registry.TEACHERS`` lists every teacher.
    """

    produces_masks: ClassVar[bool] = False
    """Whether its output is mask-structured (so the ``masks`` encoding works)."""
    imports_outputs: ClassVar[bool] = False
    """Whether it reads outputs computed outside ovlift (files) instead of running a model: the
    ``capability`` stage then exports its generated images, and reads this teacher's outputs on
    them from the folder its plan gives (``cached_outputs``) through ``importing_from``."""

    def __init__(self, config: TeacherConfigT, device: torch.device, text: TextEmbedder, what: str) -> None:
        self.config = config
        self.device = device
        self.text = text
        self.what = what
        """Who this is, for messages: "teacher 'name'"."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Feature channels C."""

    @property
    @abstractmethod
    def text_encoder(self) -> TextEncoderConfig:
        """The text encoder whose space the features live in (to embed queries)."""

    @abstractmethod
    def __call__(self, batch: TeacherInput) -> DenseFeatures | MaskFeatures:
        """Features at ``batch.feature_hw``; mask ids local to this batch."""

    @classmethod
    def model_folders(cls, config: TeacherConfigT) -> dict[str, str]:
        """Config field -> model folder (or file) it loads, text encoder included."""
        return {}

    @classmethod
    def importing_from(cls, config: TeacherConfigT, folder: str) -> TeacherConfigT:
        """The config that reads this teacher's outputs from ``folder`` (``imports_outputs``)."""
        raise TypeError(f"teacher '{cls.name}' runs a model: it imports no outputs")

    @classmethod
    def output_files(cls, config: TeacherConfigT, scene_id: str, frames: Mapping[int, str]) -> list[Path]:
        """The files it reads for these frames (index in the scene -> source name; teachers that
        import outputs, others read none)."""
        return []

    @classmethod
    def external_inputs(cls, config: TeacherConfigT, scene_id: str, frame_names: list[str]) -> dict[str, str]:
        """Content fingerprints of what it reads outside the store: every file of its model
        folders, and (teachers that add them) other files, such as imported features."""
        return model_inputs(cls.model_folders(config))


def resize_nearest(maps: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) integer or float maps resized to nearest pixel centres."""
    if tuple(maps.shape[-2:]) == tuple(hw):
        return maps
    return F.interpolate(maps[:, None].float(), size=hw, mode="nearest-exact")[:, 0].to(maps.dtype)


def top_k_masks(weights: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel of (Q, h, w) mask ``weights``, the k masks of largest weight (> 0):
    ids (h, w, k) with -1 for none, and their weights renormalised to sum to 1
    where any is kept (so the decoded feature is their weighted average)."""
    q = weights.shape[0]
    if q < k:
        weights = torch.cat([weights, weights.new_zeros((k - q, *weights.shape[1:]))])
    values, ids = weights.permute(1, 2, 0).topk(k, dim=-1)
    keep = values > 0
    total = (values * keep).sum(-1, keepdim=True).clamp(min=1e-12)
    return torch.where(keep, ids, -1).to(torch.int32), (values * keep / total).to(torch.float16)
