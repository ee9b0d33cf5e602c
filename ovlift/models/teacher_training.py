"""Training the ``trained`` teacher's network as LSeg trains its own, on labelled toy frames.

LSeg's recipe: per-pixel embeddings in the text encoder's space, logits = cosine to the
class text embeddings / ``temperature``, cross-entropy against the labels (the ignore
label skipped). A class with several prompts (``nuscenes16``'s detailed names) scores
its best prompt, the rule ``kernels.classify`` labels with everywhere else. What varies
between teachers (the calibration knobs) is config, never code: the data mix (the
``pool``'s dataset entries: seeds, ``floor_classes`` with repeats as sampling weights,
image size), resolution and capacity (``network``), class balance (``balance``,
``class_weights``), schedule (``steps``, ``lr``), augmentation and the seed.

The pool's frames are rendered once into memory. Each step draws ``batch_size`` frames
(seeded), augments each (a random crop of ``crop_scale`` to 1 of each side, resized to the
network's input; a horizontal flip; brightness, contrast and saturation jitter), and takes
one Adam step; the learning rate follows a cosine from ``lr`` to ``final_lr``. Everything
random comes from ``seed``: on the CPU two runs with the same thread count give the
same weights. The weights are rounded to float16 (what the folder stores) before the
held-out evaluation: per-pixel classes of the frames of ``validation`` at their own size
against their labels, ScanNet's rule (``kernels.metrics``).

This module trains; ``ovlift.pipeline.train_teachers`` reads the spec, resolves the
datasets, caches by fingerprint and writes the model folder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ovlift.config import FrozenConfig
from ovlift.datasets.base import Dataset
from ovlift.errors import StageInputError
from ovlift.kernels.classify import classify
from ovlift.kernels.metrics import Scores, confusion_matrix, scores
from ovlift.models.teachers.trained import DenseModelMeta, DenseNet, NetworkConfig, resize_frames
from ovlift.models.text import TextEncoderConfig, load_text_encoder
from ovlift.progress import progress
from ovlift.vocabularies import Vocabulary, get_vocabulary

TRAINING_VERSION = "1"
"""Bump when the same config trains a different model (part of the training fingerprint)."""


class AugmentConfig(FrozenConfig):
    flip: bool = True
    """Flip half the crops horizontally."""
    crop_scale: float = Field(0.6, gt=0, le=1)
    """Each crop's side is U(crop_scale, 1) of the frame's (aspect kept); 1: whole frames."""
    jitter: float = Field(0.2, ge=0, lt=1)
    """Brightness, contrast and saturation each scaled by U(1 - jitter, 1 + jitter)."""


class TeacherTrainingConfig(FrozenConfig):
    """One trained teacher: what it learns from and how."""

    pool: tuple[dict[str, Any], ...] = Field(min_length=1)
    """Dataset entries, as a plan's ``dataset:`` (``{name: toy, seed: 9000, num_scenes: 32, ...}``);
    every frame of every scene is a training image. Seeds no plan evaluates on."""
    validation: dict[str, Any]
    """The held-out dataset entry its quality is measured on (other seeds again)."""
    vocabulary: str = "scannet20"
    """Classes and prompts it learns; their names must be the datasets' label set."""
    text: TextEncoderConfig = TextEncoderConfig()
    """The text space (and templates) of the class embeddings."""
    network: NetworkConfig = NetworkConfig()
    temperature: float = Field(0.07, gt=0)
    """Logits are cosine / temperature (LSeg and CLIP: 0.07)."""
    steps: int = Field(600, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    final_lr: float = Field(3e-4, ge=0)
    """Learning rate at the last step (cosine decay from ``lr``)."""
    weight_decay: float = Field(0.0, ge=0)
    balance: float = Field(0.0, ge=0, le=1)
    """Class weights proportional to (pixel frequency in the pool)^-balance, mean 1 over the classes
    present: 0 none, 1 inverse frequency."""
    class_weights: dict[str, float] = {}
    """Further loss weight per class name (1 for the others)."""
    augment: AugmentConfig = AugmentConfig()
    seed: int = 0
    """Seeds the initial weights, the batches and the augmentation."""


@dataclass
class LabelledFrames:
    """Frames of one or more datasets, stacked (they must share one size)."""

    color: torch.Tensor
    """(N, H, W, 3) uint8."""
    depth: torch.Tensor | None
    """(N, H, W) metres; None when a dataset has no depth."""
    labels: torch.Tensor
    """(N, H, W) int64 classes of the vocabulary, -1 ignored."""
    scenes: list[dict[str, Any]] = field(default_factory=list)
    """Per dataset: its name, normalised config (seed included) and scene ids."""

    def __len__(self) -> int:
        return len(self.color)


@dataclass
class TrainingResult:
    model: DenseNet
    meta: DenseModelMeta
    held_out: Scores
    held_out_pixels: np.ndarray
    """(K,) labelled validation pixels per class."""
    pool: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    losses: list[float]
    seconds: float


def read_labelled(datasets: Sequence[Dataset], vocabulary: Vocabulary, what: str) -> LabelledFrames:
    """Every frame of every scene of ``datasets`` with its labels (progress per scene)."""
    color, depth, labels, scenes = [], [], [], []
    for dataset in datasets:
        ids = dataset.scene_ids()
        scenes.append({"dataset": dataset.name, "config": dataset.config.normalised(), "scenes": ids})
        for scene_id in progress(ids, f"{what}: rendering {dataset.name}", unit="scene"):
            source = dataset.load(scene_id)
            if tuple(source.class_names or ()) != vocabulary.classes:
                raise StageInputError(
                    f"{what}: scene '{scene_id}' labels {list(source.class_names or ())}, not vocabulary "
                    f"'{vocabulary.name}''s classes {list(vocabulary.classes)}"
                )
            for i in range(source.num_frames):
                frame = source.read_frame(i)
                if frame.labels is None:
                    raise StageInputError(f"{what}: scene '{scene_id}', frame '{frame.name}' has no label image")
                color.append(torch.from_numpy(frame.color))
                depth.append(None if frame.depth is None else torch.from_numpy(frame.depth))
                label = torch.from_numpy(frame.labels.astype(np.int64))
                labels.append(torch.where((label >= 0) & (label < len(vocabulary.classes)), label, -1))
    shapes = {tuple(c.shape) for c in color}
    if len(shapes) != 1:
        raise StageInputError(f"{what}: the frames must share one size, found {sorted(shapes)}")
    depths = [d for d in depth if d is not None]
    stacked = torch.stack(depths) if len(depths) == len(depth) else None
    return LabelledFrames(torch.stack(color), stacked, torch.stack(labels), scenes)


def loss_weights(config: TeacherTrainingConfig, labels: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
    """(K,) cross-entropy class weights: frequency^-balance, mean 1 over present classes, times ``class_weights``."""
    k = len(vocabulary.classes)
    counts = torch.bincount(labels[labels >= 0], minlength=k).double()
    present = counts > 0
    weights = torch.zeros(k, dtype=torch.float64)
    weights[present] = (counts[present] / counts.sum()) ** -config.balance
    weights[present] /= weights[present].mean()
    for name, factor in config.class_weights.items():
        if name not in vocabulary.classes:
            raise ValueError(
                f"class_weights: '{name}' is not a class of '{vocabulary.name}' {list(vocabulary.classes)}"
            )
        weights[vocabulary.index(name)] *= factor
    return weights.float()


def lseg_loss(
    cosines: torch.Tensor, labels: torch.Tensor, prompt_table: torch.Tensor, temperature: float, weights: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of (B, P, h, w) prompt cosines / temperature, a class scoring its best
    prompt (``prompt_table``), against (B, h, w) labels, -1 ignored."""
    logits = class_scores(cosines, prompt_table)
    return F.cross_entropy(logits / temperature, labels, weight=weights, ignore_index=-1)


def prompt_table(prompt_class: torch.Tensor, k: int) -> torch.Tensor:
    """(K, most prompts of a class) prompt indices per class, -1 padding (a class without
    prompts has only padding)."""
    counts = torch.bincount(prompt_class, minlength=k)
    table = torch.full((k, max(1, int(counts.max()))), -1, dtype=torch.int64)
    for c in range(k):
        ids = torch.nonzero(prompt_class == c)[:, 0]
        table[c, : len(ids)] = ids
    return table


def class_scores(cosines: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w): each class's best prompt cosine of (B, P, h, w); -inf without prompts."""
    padded = torch.cat([cosines, cosines.new_full((cosines.shape[0], 1, *cosines.shape[2:]), -torch.inf)], 1)
    gathered = padded[:, table.reshape(-1)]  # index -1: the -inf channel
    return gathered.reshape(cosines.shape[0], *table.shape, *cosines.shape[2:]).amax(dim=2)


def augmented(
    frames: LabelledFrames, index: int, config: TeacherTrainingConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One frame, augmented at the network's input size: (3, h, w) colour in [0, 1],
    (1, h, w) depth or None, (h, w) labels."""
    aug, net = config.augment, config.network
    size = (net.input_height, net.input_width)
    u = torch.rand(7, generator=gen, dtype=torch.float64).tolist()
    height, width = frames.color.shape[1:3]
    scale = aug.crop_scale + (1 - aug.crop_scale) * u[0]
    ch, cw = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = int(u[1] * (height - ch + 1)), int(u[2] * (width - cw + 1))
    rows, cols = slice(top, top + ch), slice(left, left + cw)
    depth = None if frames.depth is None else frames.depth[index, rows, cols][None]
    rgb, d = resize_frames(frames.color[index, rows, cols][None], depth, size)
    labels = F.interpolate(frames.labels[index, rows, cols][None, None].float(), size=size, mode="nearest-exact")
    rgb, labels = rgb[0], labels[0, 0].long()
    if aug.jitter > 0:
        brightness, contrast, saturation = (1 + aug.jitter * (2 * v - 1) for v in u[3:6])
        rgb = rgb * brightness
        rgb = (rgb - rgb.mean()) * contrast + rgb.mean()
        gray = rgb.mean(0, keepdim=True)
        rgb = ((rgb - gray) * saturation + gray).clamp(0, 1)
    d = None if d is None else d[0]
    if aug.flip and u[6] < 0.5:
        rgb, labels = rgb.flip(-1), labels.flip(-1)
        d = None if d is None else d.flip(-1)
    return rgb, d, labels


def training_batch(
    model: DenseNet, frames: LabelledFrames, config: TeacherTrainingConfig, gen: torch.Generator, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded draw of ``batch_size`` augmented frames: (network input, labels)."""
    picks = torch.randint(len(frames), (config.batch_size,), generator=gen).tolist()
    samples = [augmented(frames, i, config, gen) for i in picks]
    depths = [s[1] for s in samples if s[1] is not None]
    depth = torch.stack(depths) if depths else None
    x = model.inputs(torch.stack([s[0] for s in samples]), depth, what)
    return x, torch.stack([s[2] for s in samples])


@torch.no_grad()
def held_out_scores(
    model: DenseNet, frames: LabelledFrames, prompts: torch.Tensor, prompt_class: torch.Tensor, k: int, what: str
) -> tuple[Scores, np.ndarray]:
    """ScanNet's per-class IoU (K = ``k`` classes) of the model's per-pixel classes on ``frames``
    at their size, and the labelled pixels per class."""
    confusion = np.zeros((k, k + 1), dtype=np.int64)
    hw = (frames.color.shape[1], frames.color.shape[2])
    for start in range(0, len(frames), 8):
        part = slice(start, start + 8)
        depth = None if frames.depth is None else frames.depth[part]
        emb = model.embed(frames.color[part], depth, hw, what)
        _, predicted = classify(emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]), prompts, prompt_class)
        confusion += confusion_matrix(frames.labels[part].numpy(), predicted.cpu().numpy(), k)
    return scores(confusion), confusion.sum(1)


def cosine_lr(config: TeacherTrainingConfig, step: int) -> float:
    """The learning rate at ``step`` (0-based): cosine from ``lr`` to ``final_lr``."""
    t = step / max(1, config.steps - 1)
    return config.final_lr + (config.lr - config.final_lr) * 0.5 * (1 + math.cos(math.pi * t))


def fit(
    model: DenseNet,
    frames: LabelledFrames,
    config: TeacherTrainingConfig,
    prompts: torch.Tensor,
    table: torch.Tensor,
    weights: torch.Tensor,
    what: str,
) -> list[float]:
    """``config.steps`` Adam steps of LSeg's loss on augmented batches; the loss of each step.
    The weights end rounded to float16, as the folder stores them."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    losses = []
    for step in progress(range(config.steps), f"{what}: training", unit="step"):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(config, step)
        x, labels = training_batch(model, frames, config, gen, what)
        loss = lseg_loss(model.cosines(x, prompts), labels, table, config.temperature, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return losses


def train_dense_teacher(
    config: TeacherTrainingConfig, pool: Sequence[Dataset], validation: Dataset, what: str
) -> TrainingResult:
    """Trains one teacher (see the module docstring) and measures it on ``validation``."""
    start = time.monotonic()
    vocabulary = get_vocabulary(config.vocabulary)
    prompts = load_text_encoder(config.text).embed_names(vocabulary.prompts)
    prompt_class = torch.tensor(vocabulary.prompt_class)
    frames = read_labelled(pool, vocabulary, what)
    unprompted = sorted(set(range(len(vocabulary.classes))) - set(vocabulary.prompt_class))
    if any(bool((frames.labels == c).any()) for c in unprompted):
        raise ValueError(f"{what}: vocabulary '{vocabulary.name}' has no prompt for labelled classes {unprompted}")
    torch.manual_seed(config.seed)
    model = DenseNet(config.network, prompts.shape[1])
    table = prompt_table(prompt_class, len(vocabulary.classes))
    weights = loss_weights(config, frames.labels, vocabulary)
    losses = fit(model, frames, config, prompts, table, weights, what)
    held_out = read_labelled([validation], vocabulary, what)
    result, pixels = held_out_scores(model.eval(), held_out, prompts, prompt_class, len(vocabulary.classes), what)
    meta = DenseModelMeta(
        network=config.network,
        dim=prompts.shape[1],
        text=config.text,
        vocabulary=vocabulary.name,
        classes=vocabulary.classes,
        prompts=vocabulary.prompts,
        prompt_class=vocabulary.prompt_class,
        temperature=config.temperature,
    )
    seconds = time.monotonic() - start
    return TrainingResult(model, meta, result, pixels, frames.scenes, held_out.scenes, losses, seconds)


def per_class_table(classes: Sequence[str], held_out: Scores, pixels: np.ndarray) -> str:
    """The held-out per-class IoU as Markdown (``-``: a class neither present nor predicted)."""
    share = pixels / max(1, pixels.sum())
    lines = ["| class | IoU % | pixels % |", "|---|---:|---:|"]
    for name, iou, s in zip(classes, held_out.iou, share, strict=True):
        lines.append(f"| {name} | {'-' if np.isnan(iou) else f'{100 * iou:.1f}'} | {100 * s:.1f} |")
    lines.append(f"| **mIoU** | **{100 * held_out.miou:.1f}** | |")
    return "\n".join(lines) + "\n"
