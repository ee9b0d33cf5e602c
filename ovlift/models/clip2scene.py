"""CLIP2Scene's training terms (Chen et al., CVPR 2023) and their training loop.

A scene is one LiDAR key frame with its earlier sweeps; each point that projects
into a key-frame camera is paired with that pixel's 2D (MaskCLIP) feature and
class. Every step draws K sweeps per scene - the key frame and K - 1 of the
others at random, as CLIP2Scene's loader does - and trains on them with:

* **semantic consistency** on the paired points, in the released code's form
  (``ce``: cross-entropy of the point's logits ``p . t_c / tau`` over the class
  texts against its pixel's class; p unnormalised, tau 1) or the paper's Eq. 1
  (``paper_eq1``: per class c present, -log(sum over points of class c of
  exp(D(t_c, p) / tau) / sum over the other points of exp(D(t_c, p) / tau)),
  unit p, tau 0.5; averaged over the classes present, where the paper sums);
* **spatial-temporal consistency** (Eq. 2-4): the paired points of the K sweeps,
  in the key frame's coordinates, grouped in ``grid_m`` cells of the merged cloud,
  at most ``max_per_grid`` per cell (the key frame's first: the cell's text is the
  class of its first pixel, t^1); the cell centre f is an attention-weighted sum
  of its pixel and point features (joint softmax of D(., t^1) / lambda; paper) or
  of its point features only (code); the loss is the mean over packed points of
  1 - sigmoid(D(p, f)). It uses its own linear head (``local``), as the paper
  requires; the semantic term uses the student's head (``global``);
* **switchable self-training** (S3) from ``self_training_start`` on: each step a
  coin flip with ``self_training_p`` makes the semantic targets the network's own
  argmax (per step, code; or per point); optionally a self-training term on the
  points no camera sees, on the steps that self-train (the code computes it,
  then overwrites it).

Each sweep is its own sample in the sparse batch with its own augmentation
(code), or the K sweeps merged into one sample (the paper's "3 sweeps as one
input" row). Ground-truth labels are never read here.

Scenes come as a ``SceneSource`` and each step reads only its own (``prefetch_steps``
ahead in a background thread): a step's samples and grid cells come from its own scenes.
"""

from __future__ import annotations

import logging
import math
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ovlift.kernels.scatter import scatter_softmax
from ovlift.models.scene_stream import SceneSource, prefetched
from ovlift.models.student import MinkUNet, sparse_input
from ovlift.models.student_config import StudentConfig
from ovlift.models.training import (
    Augment,
    ClassText,
    Schedule,
    deterministic_algorithms,
    epoch_generator,
    resume,
    save_atomically,
    voxel_cross_entropy,
)
from ovlift.models.validation import Validation
from ovlift.progress import progress

log = logging.getLogger("ovlift")

LOG_FIELDS = ("epoch", "step", "loss", "semantic_loss", "ssr_loss", "unpaired_loss", "self_training", "lr", "val_loss")
"""Columns of CLIP2Scene's training log."""


@dataclass
class SweepScene:
    """One key frame with its sweeps and the 2D pairing of its points."""

    scene_id: str
    points: torch.Tensor
    """(N, 3) float32, key-frame coordinates."""
    sweep: torch.Tensor
    """(N,) int64 sweep of each point (0 = key frame)."""
    pixel_features: torch.Tensor
    """(N, D) the paired pixel's 2D feature (0 where unpaired)."""
    pixel_labels: torch.Tensor
    """(N,) int64 the paired pixel's class, -1 where unpaired."""

    def sweep_ids(self) -> list[int]:
        return torch.unique(self.sweep).tolist()


@dataclass(frozen=True)
class Clip2SceneTerms:
    semantic: Literal["ce", "paper_eq1"] = "ce"
    semantic_temperature: float = 1.0
    ssr_weight: float = 1.0
    ssr_features: Literal["pixels_and_points", "points"] = "pixels_and_points"
    ssr_lambda: float = 1.0
    grid_m: float = 0.1
    max_per_grid: int = 8
    self_training_start: int | None = 10
    self_training_p: float = 0.5
    self_training_switch: Literal["batch", "point"] = "batch"
    unpaired_weight: float = 0.0


@dataclass(frozen=True)
class Clip2SceneRun:
    """What one training run needs besides the scenes."""

    student: StudentConfig
    channels: int
    text: ClassText
    """The class texts the semantic term classifies over."""
    class_embeddings: torch.Tensor
    """(K, D) one unit embedding per class (the cell text t^1 of the SSR term)."""
    terms: Clip2SceneTerms
    schedule: Schedule
    augment: Augment
    sweeps: int
    """K: sweeps drawn per scene per step (the key frame and K - 1 others)."""
    sweep_input: Literal["separate", "merged"]
    epochs: int
    batch_size: int
    seed: int
    prefetch_steps: int = 0
    """Steps whose scenes a background thread reads while the current one trains (0: none)."""


def choose_sweeps(available: list[int], k: int, generator: torch.Generator) -> list[int]:
    """The key frame (0) and k - 1 of the other sweeps drawn without replacement (all if fewer)."""
    others = [s for s in available if s != 0]
    if k - 1 >= len(others):
        return [0, *others]
    picked = torch.randperm(len(others), generator=generator)[: k - 1]
    return [0, *sorted(others[i] for i in picked.tolist())]


def class_embeddings(text: ClassText) -> torch.Tensor:
    """(K, D) unit mean of each class's prompt embeddings."""
    summed = torch.zeros(text.num_classes, text.prompts.shape[1]).index_add_(0, text.prompt_class, text.prompts.float())
    return F.normalize(summed, dim=1)


def pack_grids(
    points: torch.Tensor, owner: torch.Tensor, grid_m: float, max_per_grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The points kept in their ``grid_m`` cells (a cell is one owner's: scenes never share one), at most
    ``max_per_grid`` per cell, earliest (lowest index) first, as (kept point indices, cell of each,
    numbered 0..G-1)."""
    cells = torch.cat([owner[:, None], torch.floor(points / grid_m).to(torch.int64)], dim=1)
    _, cell = torch.unique(cells, dim=0, return_inverse=True)
    order = torch.sort(cell, stable=True).indices
    sorted_cell = cell[order]
    rank = torch.arange(len(order), device=points.device) - torch.searchsorted(sorted_cell, sorted_cell)
    keep = order[rank < max_per_grid]
    return keep, cell[keep]


def ssr_loss(
    point: torch.Tensor,
    pixel: torch.Tensor | None,
    cell: torch.Tensor,
    cell_text: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """Eq. 2-4 over packed points: ``point`` (n, D) local-head features, ``pixel`` (n, D) their
    pixels' features (None: points only, the code), ``cell`` (n,) cell 0..G-1, ``cell_text`` (G, D)."""
    count = len(cell_text)
    b = (point * cell_text[cell]).sum(1) / lam
    if pixel is None:
        w = scatter_softmax(b, cell, dim=0, dim_size=count)
        centre = point.new_zeros((count, point.shape[1])).index_add_(0, cell, w[:, None] * point)
    else:
        a = (pixel * cell_text[cell]).sum(1) / lam
        both = scatter_softmax(torch.cat([a, b]), torch.cat([cell, cell]), dim=0, dim_size=count)
        wa, wb = both[: len(a)], both[len(a) :]
        centre = point.new_zeros((count, point.shape[1])).index_add_(0, cell, wa[:, None] * pixel + wb[:, None] * point)
    return (1 - torch.sigmoid((point * centre[cell]).sum(1))).mean()


def semantic_eq1(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1 from (P, K) logits D(t_c, p) / tau of unit points: per class present, positives over
    the other classes' points (the denominator excludes the positives, as written); class mean."""
    losses = []
    for c in torch.unique(labels).tolist():
        pos = labels == c
        if pos.all():
            continue
        losses.append(torch.logsumexp(logits[~pos, c], 0) - torch.logsumexp(logits[pos, c], 0))
    return torch.stack(losses).mean() if losses else logits.sum() * 0


@dataclass
class StepBatch:
    """One step's samples: what the forward pass needs and what the terms read."""

    samples: list[tuple[torch.Tensor, None]]
    """Per sample, its augmented points (no colours)."""
    rows: list[torch.Tensor]
    """Per sample, the indices of its points in their scene."""
    scenes: list[int]
    """Per sample, its scene."""


def build_step(
    run: Clip2SceneRun, scenes: SceneSource[SweepScene], batch: list[int], generator: torch.Generator
) -> StepBatch:
    samples, rows, owners = [], [], []
    for i in batch:
        scene = scenes[i]
        chosen = choose_sweeps(scene.sweep_ids(), run.sweeps, generator)
        groups = [torch.nonzero(scene.sweep == s, as_tuple=True)[0] for s in chosen]
        if run.sweep_input == "merged":
            groups = [torch.cat(groups)]
        for idx in groups:
            samples.append((run.augment(scene.points[idx], generator), None))
            rows.append(idx)
            owners.append(i)
    return StepBatch(samples, rows, owners)


def terms_of_step(
    run: Clip2SceneRun,
    scenes: SceneSource[SweepScene],
    step: StepBatch,
    trunk: torch.Tensor,
    maps: list[torch.Tensor],
    heads: tuple[nn.Module, nn.Module],
    self_train: bool,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, semantic, ssr, unpaired) of one step from the trunk's voxel features."""
    terms = run.terms
    global_head, local_head = heads
    point_voxel = torch.cat(maps)
    labels = torch.cat([scenes[s].pixel_labels[r] for r, s in zip(step.rows, step.scenes)]).to(device)
    paired = labels >= 0
    unit = F.normalize(global_head(trunk), dim=1) if terms.semantic == "paper_eq1" else global_head(trunk)
    voxel_logits = run.text.logits(unit, terms.semantic_temperature)
    semantic = semantic_term(terms, voxel_logits, point_voxel[paired], labels[paired], self_train, generator)
    zero = trunk.new_zeros(())
    unpaired = zero
    if terms.unpaired_weight > 0 and self_train and (~paired).any():
        unpaired_voxel = point_voxel[~paired]
        unpaired = voxel_cross_entropy(voxel_logits, unpaired_voxel, voxel_logits.detach().argmax(1)[unpaired_voxel])
    ssr = zero
    if terms.ssr_weight > 0 and paired.any():
        ssr = ssr_term(run, scenes, step, local_head(trunk), point_voxel, labels)
    total = semantic + terms.ssr_weight * ssr + terms.unpaired_weight * unpaired
    return total, semantic, ssr, unpaired


def semantic_term(
    terms: Clip2SceneTerms,
    voxel_logits: torch.Tensor,
    paired_voxel: torch.Tensor,
    targets: torch.Tensor,
    self_train: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """Semantic consistency on the paired points (logits per voxel, gathered per point), against
    their pixels' classes or, on a self-training step, the network's own argmax."""
    if self_train:
        own = voxel_logits.detach().argmax(1)[paired_voxel]
        if terms.self_training_switch == "batch":
            targets = own
        else:
            flip = torch.rand(len(own), generator=generator) < terms.self_training_p
            targets = torch.where(flip.to(own.device), own, targets)
    if len(targets) == 0:
        return voxel_logits.new_zeros(())
    if terms.semantic == "ce":  # per-voxel label counts: autograd never sees a (P, K) gather
        return voxel_cross_entropy(voxel_logits, paired_voxel, targets)
    return semantic_eq1(voxel_logits[paired_voxel], targets)


def ssr_term(
    run: Clip2SceneRun,
    scenes: SceneSource[SweepScene],
    step: StepBatch,
    voxel_local: torch.Tensor,
    point_voxel: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Spatial-temporal consistency: cells of the merged cloud in key-frame coordinates, per scene,
    earlier samples (the key frame) first; each cell's text is its first point's pixel class."""
    terms, device = run.terms, labels.device
    owner = torch.cat([torch.full((len(r),), s) for r, s in zip(step.rows, step.scenes)])
    positions = torch.cat([scenes[s].points[r] for r, s in zip(step.rows, step.scenes)]).double()
    idx = torch.nonzero((labels >= 0).cpu(), as_tuple=True)[0]
    keep, cell = pack_grids(positions[idx], owner[idx], terms.grid_m, terms.max_per_grid)
    keep, cell = idx[keep].to(device), cell.to(device)
    first = torch.full((int(cell.max()) + 1,), len(keep), dtype=torch.int64, device=device)
    first.scatter_reduce_(0, cell, torch.arange(len(keep), device=device), reduce="amin")
    cell_text = run.class_embeddings.to(device)[labels[keep[first]]]
    point = voxel_local[point_voxel[keep]]
    pixel = None
    if terms.ssr_features == "pixels_and_points":
        pixel = F.normalize(kept_pixel_features(run, scenes, step, keep.cpu()).to(device), dim=1)
    return ssr_loss(point, pixel, cell, cell_text, terms.ssr_lambda)


def kept_pixel_features(
    run: Clip2SceneRun, scenes: SceneSource[SweepScene], step: StepBatch, kept: torch.Tensor
) -> torch.Tensor:
    """(n, D) float32 pixel features of the step's points ``kept`` (indices over all its samples),
    gathered per sample rather than over all rows."""
    offsets = torch.cumsum(torch.tensor([0] + [len(r) for r in step.rows]), 0)
    sample = torch.searchsorted(offsets, kept, right=True) - 1
    rows = torch.cat(step.rows)[kept]
    pixel = torch.empty((len(kept), run.channels))
    for i, s in enumerate(step.scenes):
        mine = sample == i
        pixel[mine] = scenes[s].pixel_features[rows[mine]].float()
    return pixel


def train_clip2scene(
    scenes: SceneSource[SweepScene],
    run: Clip2SceneRun,
    device: torch.device,
    checkpoints: Path,
    validation: tuple[SceneSource[SweepScene], Validation] | None = None,
) -> tuple[MinkUNet, list[dict]]:
    """Train (or resume from the last epoch checkpoint) and return the student and the log rows;
    with ``validation`` (held-out scenes and their record) the loss on them after every epoch,
    early stopping and the best epoch's weights (``models.validation``).

    One process (no DDP). Deterministic from ``run.seed``: initialisation, and per epoch the
    scene order, sweep draws, augmentations and switch coin flips from ``epoch_generator``.
    """
    with deterministic_algorithms():
        torch.manual_seed(run.seed)
        model = MinkUNet(run.student, run.channels, device).to(device)
        local_head = nn.Linear(model.trunk_channels, run.channels).to(device)
        modules = {"model": model, "local_head": local_head}
        optimizer = run.schedule.optimizer_for(list(model.parameters()) + list(local_head.parameters()))
        rows, start, state = resume(checkpoints, device, optimizer, run.epochs, **modules)
        run_on_device = replace(run, text=run.text.to(device))
        if validation is not None:
            validation[1].resume(state.get("validation"))
        for epoch in progress(range(start, run.epochs), "distill (clip2scene)", unit="epoch"):
            if validation is not None and validation[1].done():
                break
            model.train()
            local_head.train()
            rows += train_epoch(run_on_device, scenes, (model, local_head), optimizer, epoch, device)
            if validation is not None:
                validation[1].record(validation_loss(run_on_device, validation[0], modules, device), modules)
                rows[-1]["val_loss"] = validation[1].losses[-1]
            state = {"model": model.state_dict(), "local_head": local_head.state_dict()}
            state |= {"optimizer": optimizer.state_dict(), "epoch": epoch, "rows": rows}
            state |= {"validation": validation[1].state() if validation is not None else None}
            save_atomically(state, checkpoints / f"epoch_{epoch:04d}.pt")
        if validation is not None:
            validation[1].publish(modules)
        return model, rows


def train_epoch(
    run: Clip2SceneRun,
    scenes: SceneSource[SweepScene],
    modules: tuple[MinkUNet, nn.Module],
    optimizer: torch.optim.Optimizer,
    epoch: int,
    device: torch.device,
) -> list[dict]:
    """The epoch's steps, in an order drawn from (seed, epoch), each on the scenes it reads; their log rows."""
    generator = epoch_generator(run.seed, epoch)
    order = torch.randperm(len(scenes), generator=generator).tolist()
    per_epoch = math.ceil(len(scenes) / run.batch_size)
    steps = [order[step * run.batch_size : (step + 1) * run.batch_size] for step in range(per_epoch)]
    read = prefetched(partial(scenes_of, scenes), steps, run.prefetch_steps)
    with closing(read):  # next(): no reference to a past step's scenes stays
        return [
            train_step(run, next(read), batch, modules, optimizer, (epoch, step, per_epoch), generator, device)
            for step, batch in enumerate(steps)
        ]


def scenes_of(scenes: SceneSource[SweepScene], batch: list[int]) -> dict[int, SweepScene]:
    """The scenes ``batch``, read, by their index (what a step's terms number their cells by)."""
    return {i: scenes[i] for i in batch}


@torch.no_grad()
def validation_loss(
    run: Clip2SceneRun, scenes: SceneSource[SweepScene], modules: dict[str, nn.Module], device: torch.device
) -> float:
    """The semantic and spatial-temporal terms (no self-training: its targets are the model's own)
    on each validation scene, unaugmented, with the same K sweeps every epoch, read one at a time;
    their mean."""
    model, local_head = modules["model"], modules["local_head"]
    model.eval()
    local_head.eval()
    still = replace(run, augment=Augment(rotate_z=False, flip=False, scale=(1.0, 1.0)))
    read = prefetched(partial(scenes_of, scenes), [[i] for i in range(len(scenes))], run.prefetch_steps)
    with closing(read):
        losses = [scene_validation_loss(still, next(read), i, (model, local_head), device) for i in range(len(scenes))]
    model.train()
    local_head.train()
    return sum(losses) / max(len(losses), 1)


def scene_validation_loss(
    run: Clip2SceneRun, scene: dict[int, SweepScene], i: int, modules: tuple[nn.Module, nn.Module], device: torch.device
) -> float:
    model, local_head = modules
    generator = torch.Generator().manual_seed(i)
    built = build_step(run, scene, [i], generator)
    x, maps = sparse_input(built.samples, run.student, device)
    heads = (model.head, local_head)
    return terms_of_step(run, scene, built, model.trunk(x), maps, heads, False, generator, device)[0].item()


def train_step(
    run: Clip2SceneRun,
    scenes: SceneSource[SweepScene],
    batch: list[int],
    modules: tuple[MinkUNet, nn.Module],
    optimizer: torch.optim.Optimizer,
    when: tuple[int, int, int],
    generator: torch.Generator,
    device: torch.device,
) -> dict:
    """One optimiser step on the scenes ``batch`` (``scenes`` holds them) at ``when``: (epoch, step,
    steps per epoch); returns its log row."""
    model, local_head = modules
    epoch, step, steps_per_epoch = when
    global_step = epoch * steps_per_epoch + step
    lr = run.schedule.apply(optimizer, global_step, steps_per_epoch * run.epochs)
    built = build_step(run, scenes, batch, generator)
    coin = float(torch.rand((), generator=generator))
    st_start = run.terms.self_training_start
    phase = st_start is not None and epoch >= st_start
    self_train = phase and (run.terms.self_training_switch == "point" or coin < run.terms.self_training_p)
    x, maps = sparse_input(built.samples, run.student, device)
    trunk = model.trunk(x)
    heads = (model.head, local_head)
    total, semantic, ssr, unpaired = terms_of_step(
        run, scenes, built, trunk, maps, heads, self_train, generator, device
    )
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    losses = {"loss": total, "semantic_loss": semantic, "ssr_loss": ssr, "unpaired_loss": unpaired}
    row = {"epoch": epoch, "step": global_step, "self_training": int(self_train), "lr": lr}
    return row | {name: value.item() for name, value in losses.items()}
