"""``trained-regions``: label-free image regions described by a trained dense teacher (CUS3D's masks).

CUS3D's 2D stage is a mask segmenter whose proposals overlap, each described by one
embedding; its 2D filter (``kernels.mask_vote``) decides what each pixel averages. Here
the proposals come from the images themselves: scikit-image's graph-based segmentation
(Felzenszwalb and Huttenlocher) of the frame's RGB, and of its depth where the frames
have depth (``use_depth``), at every scale of ``scales``, all at the feature grid. Each
segmentation covers the frame once, so each pixel lies in one region per segmentation:
coarse regions contain fine ones (nested masks), and regions that leak across an object
edge at a coarse scale, or split an object in depth but not in colour, disagree with the
others (spurious and leaking masks) -- because of the images, never because labels were
edited in.

A region's embedding is the normalised mean of the ``trained`` model's unit embeddings
over its pixels (the model at ``model_path``); its label, the class whose prompt is nearest
(``kernels.classify``, the rule ``mask-crops`` labels its masks with); its probability,
constant over it: 1 (``probability: one``), or its coherence (``coherence``, the default),
the mean cosine of its pixels' embeddings to the region's, which is the length of the
mean of unit vectors -- a region that leaks over two objects is less sure than one that
follows an object. Labels and instance images are never read.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ovlift.config import ModelPath
from ovlift.kernels.classify import classify
from ovlift.kernels.fusion import MaskFeatures
from ovlift.models.teachers.base import FrameMasks, MaskVoteConfig, Teacher, TeacherInput, voted_mask_features
from ovlift.models.teachers.trained import TrainedModel, resize_frames


class RegionsConfig(MaskVoteConfig):
    model_path: ModelPath
    """The ``trained`` teacher's model folder whose embeddings describe the regions."""
    scales: tuple[float, ...] = Field((100.0, 400.0, 1600.0), min_length=1)
    """Felzenszwalb's ``scale`` of each segmentation (larger: fewer, larger regions)."""
    sigma: float = Field(0.8, ge=0)
    """Gaussian smoothing before segmenting, pixels of the feature grid."""
    min_size: int = Field(20, ge=1)
    """Smallest region, pixels of the feature grid."""
    use_depth: bool = True
    """Also segment the depth image (where frames have depth), at the same scales."""
    depth_unit_m: float = Field(1.0, gt=0)
    """Depth is segmented in units of this (as colour in [0, 1]: 1 m weighs as white vs black)."""
    probability: Literal["one", "coherence"] = "coherence"
    """A region's probability: 1, or its embeddings' coherence (mean cosine to the region's)."""


def region_embeddings(dense: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, C) unit mean embedding and (R,) coherence of each region of a (h, w) map of region
    ids 0..R-1, from (C, h, w) unit embeddings. Coherence: the length of the mean of the
    region's unit vectors, which is their mean cosine to the normalised mean."""
    flat = dense.flatten(1).T.float()  # (h*w, C)
    ids = segments.reshape(-1).to(torch.int64)
    r = int(ids.max()) + 1
    sums = flat.new_zeros((r, flat.shape[1])).index_add_(0, ids, flat)
    counts = torch.bincount(ids, minlength=r).clamp(min=1).to(flat.dtype)
    mean = sums / counts[:, None]
    return F.normalize(mean, dim=1), mean.norm(dim=1).clamp(0, 1)


class RegionsTeacher(TrainedModel, Teacher[RegionsConfig]):
    name = "trained-regions"
    version = "1"
    produces_masks = True

    def segmentations(self, rgb: np.ndarray, depth: np.ndarray | None) -> list[np.ndarray]:
        """(h, w) region-id maps of one frame: RGB at every scale, then depth at every scale."""
        from skimage.segmentation import felzenszwalb

        cfg = self.config
        maps = [felzenszwalb(rgb, scale=s, sigma=cfg.sigma, min_size=cfg.min_size) for s in cfg.scales]
        if depth is not None and cfg.use_depth:
            image = depth / cfg.depth_unit_m
            maps += [
                felzenszwalb(image, scale=s, sigma=cfg.sigma, min_size=cfg.min_size, channel_axis=None)
                for s in cfg.scales
            ]
        return maps

    def frame_masks(self, dense: torch.Tensor, maps: list[np.ndarray], prompts, prompt_class) -> FrameMasks:
        """One frame's masks: every region of every segmentation, in order."""
        probs, embeddings = [], []
        for segments in maps:
            ids = torch.from_numpy(np.unique(segments, return_inverse=True)[1].reshape(segments.shape))
            ids = ids.to(dense.device, torch.int64)
            emb, coherence = region_embeddings(dense, ids)
            weight = coherence if self.config.probability == "coherence" else torch.ones_like(coherence)
            regions = ids[None] == torch.arange(len(emb), device=ids.device)[:, None, None]
            probs.append(regions * weight[:, None, None])
            embeddings.append(emb)
        emb = torch.cat(embeddings).cpu()
        return FrameMasks(torch.cat(probs).cpu(), classify(emb, prompts, prompt_class)[1], emb)

    @torch.no_grad()
    def __call__(self, batch: TeacherInput) -> MaskFeatures:
        where = f"scene '{batch.scene_id}': {self.what}"
        hw = batch.feature_hw
        dense = self.model.embed(batch.color, batch.depth, hw, where)
        rgb, depth = resize_frames(batch.color, batch.depth, hw)
        prompts = self.text(self.meta.text, list(self.meta.prompts)).to(torch.float32)
        prompt_class = torch.tensor(self.meta.prompt_class)
        frames = []
        for b in range(len(dense)):
            frame_depth = None if depth is None else depth[b, 0].double().numpy()
            maps = self.segmentations(rgb[b].permute(1, 2, 0).double().numpy(), frame_depth)
            frames.append(self.frame_masks(dense[b], maps, prompts, prompt_class))
        return voted_mask_features(frames, self.config, len(self.meta.classes))
