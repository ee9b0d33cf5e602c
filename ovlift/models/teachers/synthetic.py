"""``synthetic``: a controllable teacher for toy scenes.

Its feature at a pixel is the text embedding of the rendered ground-truth class,
corrupted by seeded, controllable noise:

* **confusion**: a per-class table, applied per object instance per view (a
  picture seen as a wall in some views). Which views confuse is drawn from a
  golden-ratio sequence over frames with a seeded offset per instance, so the
  realised rates follow the table closely even over few views;
* **boundary bleeding**: object labels spread ``bleed_px`` pixels across their
  edges onto the background behind them (the nearer surface wins), the
  segmentation noise CUS3D's filters target;
* **feature noise**: Gaussian noise per region (instance and view), relative to
  the unit embedding (``noise_std`` 1 gives noise as large as the signal);
* **spurious masks**: at ``spurious_rate`` per region and view, an extra mask of
  another class (uniform over the label set) on a rectangle the size of the
  region's bounding box centred on one of its pixels, so it covers part of the
  region and some surroundings: the noise CUS3D's 2D filter targets (the
  per-instance confusion above is what its 3D filter targets). With
  ``nested_masks`` each region also yields a mask of its central part (half its
  bounding box each way), so that there a vote is two true masks against one.

Every mask has a probability, constant over it (true and nested: U(0.6, 1);
spurious: U(0.36, 0.8)), and a label, its embedding's nearest class, exactly as
``mask-crops`` labels its masks; the same 2D filter (``overlap``, ``fallback``)
then decides what each pixel averages. Without spurious or nested masks each
pixel has at most one mask, so every rule gives the same output as before they
existed. Pixels without a class (the ceiling in ScanNet-20) are in no mask and
get no feature, unless ``fallback: image-mean``.

Two teachers with different weaknesses differ only in their ``confusion`` (and
``seed``), e.g. ``{sofa: {chair: 0.5}}`` versus ``{chair: {sofa: 0.5}}``.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from ovlift.errors import StageInputError
from ovlift.kernels.classify import classify
from ovlift.kernels.fusion import MaskFeatures
from ovlift.models.teachers.base import (
    FrameMasks,
    MaskVoteConfig,
    Teacher,
    TeacherInput,
    resize_nearest,
    voted_mask_features,
)
from ovlift.models.text import TextEncoderConfig, encoder_dim, encoder_folder

GOLDEN = (math.sqrt(5) - 1) / 2
TRUE_PROB = (0.6, 1.0)
"""Range a true (or nested) mask's probability is drawn from."""
SPURIOUS_PROB = (0.36, 0.8)
"""Range a spurious mask's probability is drawn from (above CUS3D's 0.35 threshold)."""


class SyntheticConfig(MaskVoteConfig):
    text: TextEncoderConfig = TextEncoderConfig()
    """The text space the features live in (the class names are embedded by it)."""
    confusion: dict[str, dict[str, float]] = {}
    """true class -> {perceived class: probability}; the rest stays correct."""
    bleed_px: int = Field(0, ge=0)
    """Pixels that object labels spread across their edges onto the background."""
    bleed_onto: tuple[str, ...] = ("wall", "floor")
    """Background classes that objects bleed onto (unlabelled pixels always count)."""
    noise_std: float = Field(0.0, ge=0)
    """Gaussian noise per region and view, relative to the unit embedding."""
    spurious_rate: float = Field(0.0, ge=0, le=1)
    """Probability, per region and view, of an extra overlapping mask of another class."""
    nested_masks: bool = False
    """Each region also yields a mask of its central part, of the region's perceived class."""
    seed: int = 0
    """Seeds the confusion offsets, the noise and the extra masks."""

    @field_validator("confusion")
    @classmethod
    def _probabilities(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for true, row in value.items():
            if any(not 0 <= p <= 1 for p in row.values()):
                raise ValueError(f"confusion[{true!r}]: probabilities must lie in [0, 1], found {row}")
            if sum(row.values()) > 1 + 1e-9:
                raise ValueError(f"confusion[{true!r}]: probabilities sum to {sum(row.values()):.3f} > 1")
        return value


class SyntheticTeacher(Teacher[SyntheticConfig]):
    name = "synthetic"
    version = "1"
    produces_masks = True
    reads_ground_truth = "ground-truth labels and instances of the frames"

    @property
    def dim(self) -> int:
        return encoder_dim(self.config.text)

    @classmethod
    def model_folders(cls, config: SyntheticConfig) -> dict[str, str]:
        return {"text": encoder_folder(config.text)}

    @property
    def text_encoder(self) -> TextEncoderConfig:
        return self.config.text

    def confusion_matrix(self, class_names: tuple[str, ...], where: str) -> torch.Tensor:
        """(K, K) row-stochastic: row c = probabilities of perceiving each class."""
        k = len(class_names)
        matrix = torch.eye(k, dtype=torch.float64)
        for true, row in self.config.confusion.items():
            for name in (true, *row):
                if name not in class_names:
                    raise StageInputError(
                        f"{where}: {self.what}: confusion names class '{name}', which the scene's label set "
                        f"{list(class_names)} does not have"
                    )
            c = class_names.index(true)
            for other, p in row.items():
                matrix[c, class_names.index(other)] += p
            matrix[c, c] -= sum(row.values())
        return matrix

    def __call__(self, batch: TeacherInput) -> MaskFeatures:
        where = f"scene '{batch.scene_id}'"
        if batch.labels is None or batch.instances is None or batch.class_names is None:
            raise StageInputError(
                f"{where}: {self.what} needs ground-truth label and instance images (frames/labels, frames/instances), "
                "which only synthetic datasets such as 'toy' provide"
            )
        hw = batch.feature_hw
        labels = resize_nearest(batch.labels.to(torch.int64), hw)
        instances = resize_nearest(batch.instances.to(torch.int64), hw)
        depth = resize_nearest(batch.depth.float(), hw) if batch.depth is not None else torch.zeros(labels.shape)
        class_emb = self.text(self.config.text, list(batch.class_names)).to(torch.float32)
        confusion = self.confusion_matrix(batch.class_names, where)
        background = {batch.class_names.index(n) for n in self.config.bleed_onto if n in batch.class_names}
        scene_salt = _salt(self.config.seed, batch.scene_id)
        frames = []
        for b in range(labels.shape[0]):
            frame = int(batch.frame_index[b])
            region = _bleed(labels[b], instances[b], depth[b], background, self.config.bleed_px)
            frames.append(self._masks(labels[b], instances[b], region, frame, confusion, class_emb, scene_salt))
        return voted_mask_features(frames, self.config, len(batch.class_names))

    def perceived_class(self, true_class: int, instance: int, frame: int, confusion: torch.Tensor, salt: int) -> int:
        """The class a view perceives an instance as (stratified over frames)."""
        offset = _unit(salt, instance)
        u = (offset + frame * GOLDEN) % 1.0
        cumulative = torch.cumsum(confusion[true_class], 0)
        return int(
            min(torch.searchsorted(cumulative, torch.tensor(u, dtype=torch.float64), right=True), len(cumulative) - 1)
        )

    def _masks(
        self,
        labels: torch.Tensor,
        instances: torch.Tensor,
        region: torch.Tensor,
        frame: int,
        confusion: torch.Tensor,
        class_emb: torch.Tensor,
        salt: int,
    ) -> FrameMasks:
        """The frame's masks: one per labelled region (in instance order), then the
        nested and spurious ones. Draws are per instance, so one region's masks do
        not depend on which other regions the view holds."""
        cfg = self.config
        num = int(instances.max()) + 1
        inst_label = torch.full((num,), -1, dtype=torch.int64)
        inst_label[instances.reshape(-1)] = labels.reshape(-1)
        present = torch.unique(region)
        present = present[inst_label[present] >= 0]  # unlabelled regions carry no feature
        perceived = torch.tensor(
            [self.perceived_class(int(inst_label[i]), int(i), frame, confusion, salt) for i in present.tolist()],
            dtype=torch.int64,
        )
        dim = class_emb.shape[1]
        emb = class_emb[perceived] if len(present) else class_emb[:0]
        if cfg.noise_std > 0 and len(present):
            gen = torch.Generator().manual_seed(_salt(salt, frame))
            emb = self._noisy(emb, torch.randn(num, dim, generator=gen)[present])
        masks = region[None] == present[:, None, None]
        draw = torch.rand(num, 6, generator=torch.Generator().manual_seed(_salt(salt, frame, "masks")))[present]
        probs = [masks * _between(TRUE_PROB, draw[:, 0])[:, None, None]]
        extra: list[torch.Tensor] = []
        if cfg.nested_masks or cfg.spurious_rate > 0:
            noise = torch.randn(num, 2, dim, generator=torch.Generator().manual_seed(_salt(salt, frame, "mask noise")))
            more, extra = self._extra_masks(region, masks, inst_label, present, perceived, draw, noise, class_emb)
            probs += more
        emb = torch.cat([emb, *extra])
        return FrameMasks(torch.cat(probs), classify(emb, class_emb, torch.arange(len(class_emb)))[1], emb)

    def _extra_masks(
        self,
        region: torch.Tensor,
        masks: torch.Tensor,
        inst_label: torch.Tensor,
        present: torch.Tensor,
        perceived: torch.Tensor,
        draw: torch.Tensor,
        noise: torch.Tensor,
        class_emb: torch.Tensor,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each present region's nested and spurious masks, region by region: their
        probabilities (1, h, w) and embeddings (1, C). ``masks``, ``perceived`` and ``draw``
        are per present region; ``inst_label`` and ``noise`` per instance."""
        cfg = self.config
        probs: list[torch.Tensor] = []
        extra: list[torch.Tensor] = []
        rows, cols = torch.arange(region.shape[0])[:, None], torch.arange(region.shape[1])[None]
        labelled = inst_label[region] >= 0
        for j, inst in enumerate(present.tolist()):
            ys, xs = torch.nonzero(masks[j], as_tuple=True)
            height, width = float(ys.max() - ys.min() + 1), float(xs.max() - xs.min() + 1)
            middle_y, middle_x = float(ys.min() + ys.max()) / 2, float(xs.min() + xs.max()) / 2
            central = masks[j] & ((rows - middle_y).abs() <= height / 4) & ((cols - middle_x).abs() <= width / 4)
            if cfg.nested_masks and central.any():
                probs.append(central[None] * _between(TRUE_PROB, draw[j, 1]))
                extra.append(self._noisy(class_emb[perceived[j]][None], noise[inst, 0][None]))
            if draw[j, 2] < cfg.spurious_rate and len(class_emb) > 1:
                other = (int(inst_label[inst]) + 1 + int(draw[j, 3] * (len(class_emb) - 1))) % len(class_emb)
                k = int(draw[j, 4] * len(ys))
                box = ((rows - ys[k]).abs() <= height / 2) & ((cols - xs[k]).abs() <= width / 2)
                probs.append((box & labelled)[None] * _between(SPURIOUS_PROB, draw[j, 5]))
                extra.append(self._noisy(class_emb[other][None], noise[inst, 1][None]))
        return probs, extra

    def _noisy(self, emb: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Unit embeddings plus ``noise_std`` times unit-scale Gaussian ``noise``, renormalised."""
        if self.config.noise_std == 0:
            return emb
        return F.normalize(emb + self.config.noise_std * noise / math.sqrt(emb.shape[1]), dim=-1)


def _between(bounds: tuple[float, float], u: torch.Tensor) -> torch.Tensor:
    """Uniform draws ``u`` in [0, 1) mapped onto [low, high)."""
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _bleed(
    labels: torch.Tensor, instances: torch.Tensor, depth: torch.Tensor, background: set[int], steps: int
) -> torch.Tensor:
    """Region (instance) map after object labels spread ``steps`` pixels onto the
    background: each step, a background pixel takes the nearest-in-depth object
    among its 3x3 neighbours."""
    region = instances.clone()
    is_object = ~(labels < 0)
    for c in background:
        is_object &= labels != c
    priority = torch.where(is_object, -depth, torch.full_like(depth, -float("inf")))
    for _ in range(steps):
        pooled, index = F.max_pool2d(priority[None, None], 3, stride=1, padding=1, return_indices=True)
        pooled, index = pooled[0, 0], index[0, 0]
        take = ~is_object & torch.isfinite(pooled)
        region = torch.where(take, region.reshape(-1)[index], region)
        priority = torch.where(take, pooled, priority)
        is_object = is_object | take
    return region


def _salt(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & (2**63 - 1)


def _unit(salt: int, instance: int) -> float:
    return (_salt(salt, instance) % 1_000_003) / 1_000_003
