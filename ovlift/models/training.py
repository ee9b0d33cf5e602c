"""Distillation training loop: losses, schedule, augmentation, checkpoints, DDP.

Determinism: the model is initialised from ``seed``; every epoch draws its scene
order and augmentations from a generator seeded by (seed, epoch); the learning
rate is a function of the step. A checkpoint after every epoch holds the model,
the optimiser and the loss log, so a killed run resumes at the next epoch and
ends exactly where an uninterrupted run with the same seed ends.

Multi-GPU: under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in
DistributedDataParallel (NCCL on CUDA, Gloo on CPU) and each global batch of
scenes is split across ranks (see ``rank_share`` for an uneven last batch); rank 0
writes checkpoints. One CPU process runs the same code with a world of one.

Memory: the scenes come as a ``SceneSource`` (a list, or the store's scenes read when
indexed); each step reads only its scenes (under DDP, this rank's share), optionally
``prefetch_steps`` ahead in a background thread (``scene_stream.prefetched``), so peak
memory does not grow with the number of training scenes. An epoch's augmentations are
drawn up front in its scene order and applied when a scene is read.

SAS's TESD (``Tesd``): from its start epoch on, an exponential moving average of
the student's class scores per point (or per superpoint) gives pseudo labels. The
bank is initialised at the start epoch from the model in eval mode on each whole,
unaugmented scene, updated on every visit of a scene from that visit's forward
pass, and kept per scene on disk beside the checkpoints (``tesd_bank.BankFiles``),
whose checkpoints name its generation (a resumed run reads it). Under DDP each
step's updated entries are sent from the rank that visited a scene to all others,
and every rank writes them to its own files folder (shared or not).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ovlift.atomic_files import write_atomically
from ovlift.models.scene_stream import SceneSource, prefetched
from ovlift.models.student import MinkUNet, sparse_input
from ovlift.models.student_config import StudentConfig
from ovlift.models.tesd_bank import BankFiles
from ovlift.models.text import TextEmbedder, TextEncoderConfig
from ovlift.models.validation import Validation
from ovlift.progress import progress
from ovlift.vocabularies import Vocabulary

log = logging.getLogger("ovlift")


@dataclass
class SceneData:
    """One training scene: points and the fused teacher features they distil."""

    scene_id: str
    points: torch.Tensor
    colors: torch.Tensor | None
    targets: torch.Tensor
    """(N, D) teacher features (float16)."""
    seen: torch.Tensor
    """(N,) points with teacher features (the loss ignores the others)."""
    labels: torch.Tensor | None = None
    """(N,) the teacher's class per point, for the label loss."""
    superpoints: torch.Tensor | None = None
    """(N,) int64 superpoint of each point, 0..S-1, each id used (None: every point is its own, SAS outdoors)."""


@dataclass(frozen=True)
class Schedule:
    optimizer: str
    lr: float
    final_lr: float
    kind: str
    weight_decay: float

    def optimizer_for(self, params) -> torch.optim.Optimizer:
        """Adam, AdamW, or CLIP2Scene's SGD (momentum 0.9, dampening 0.1)."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9, dampening=0.1, weight_decay=self.weight_decay)
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.optimizer]
        return cls(params, lr=self.lr, weight_decay=self.weight_decay)

    def lr_at(self, step: int, total: int) -> float:
        """Cosine or linear from ``lr`` to ``final_lr`` over ``total`` steps."""
        t = min(step / max(total, 1), 1.0)
        if self.kind == "cosine":
            return self.final_lr + (self.lr - self.final_lr) * (1 + math.cos(math.pi * t)) / 2
        return self.lr + (self.final_lr - self.lr) * t

    def apply(self, optimizer: torch.optim.Optimizer, step: int, total: int) -> float:
        """Set the optimiser's learning rate for ``step`` of ``total``; returns it."""
        lr = self.lr_at(step, total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


@dataclass(frozen=True)
class Augment:
    rotate_z: bool = True
    flip: bool = True
    scale: tuple[float, float] = (0.9, 1.1)

    def __call__(self, points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(points, self.draw(generator))

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """One augmentation's random numbers (4, whatever is on): taken apart from ``apply`` so that
        an epoch draws every scene's in its order before any scene is read."""
        return torch.rand(4, generator=generator, dtype=torch.float64)

    def apply(self, points: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        centre = points.mean(0)
        p = (points - centre).to(torch.float64)
        if self.rotate_z:
            a = (2 * r[0] - 1) * math.pi
            c, s = math.cos(a), math.sin(a)
            p = p @ torch.tensor([[c, s, 0], [-s, c, 0], [0, 0, 1]], dtype=torch.float64)
        if self.flip:
            p[:, 0] *= -1 if r[1] < 0.5 else 1
            p[:, 1] *= -1 if r[2] < 0.5 else 1
        p *= self.scale[0] + (self.scale[1] - self.scale[0]) * float(r[3])
        return (p + centre).to(points.dtype)


@dataclass(frozen=True)
class ClassText:
    """The vocabulary's prompt embeddings and the class of each: the label loss classifies
    over classes (a class's logit is its best prompt's), not over prompts."""

    prompts: torch.Tensor
    """(P, D) unit prompt embeddings."""
    prompt_class: torch.Tensor
    """(P,) class of each prompt."""
    num_classes: int

    @staticmethod
    def embed(vocabulary: Vocabulary, text: TextEmbedder, encoder: dict, templates: str) -> ClassText:
        """The vocabulary's prompts embedded by ``text`` with ``encoder`` (a normalised text encoder
        config, e.g. a teacher's) and ``templates``."""
        config = TextEncoderConfig(**{**encoder, "templates": templates})
        prompts = text(config, list(vocabulary.prompts))
        return ClassText(prompts, torch.tensor(vocabulary.prompt_class), len(vocabulary.classes))

    def to(self, device: torch.device) -> ClassText:
        return ClassText(self.prompts.to(device), self.prompt_class.to(device), self.num_classes)

    def logits(self, unit: torch.Tensor, temperature: float) -> torch.Tensor:
        """(V, K) cos / temperature of (V, D) unit features to each class (max over its prompts)."""
        per_prompt = unit @ self.prompts.T.to(unit.dtype) / temperature
        if len(self.prompt_class) == self.num_classes and bool(
            (self.prompt_class == torch.arange(self.num_classes, device=self.prompt_class.device)).all()
        ):
            return per_prompt
        index = self.prompt_class.expand(len(unit), -1)
        empty = per_prompt.new_full((len(unit), self.num_classes), -float("inf"))
        return empty.scatter_reduce(1, index, per_prompt, reduce="amax", include_self=False)


def superpoint_mean(values: torch.Tensor, superpoint: torch.Tensor, count: int) -> torch.Tensor:
    """(S, C) float32 mean of the (P, C) ``values`` over the points of each superpoint ``0..count-1``
    (``superpoint`` (P,); a superpoint without points gets zeros)."""
    sums = values.new_zeros((count, values.shape[1]), dtype=torch.float32).index_add_(0, superpoint, values.float())
    return sums / torch.bincount(superpoint, minlength=count).clamp(min=1)[:, None].to(sums.dtype)


def voxel_cross_entropy(logits: torch.Tensor, point_voxel: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over points of CE(logits of the point's voxel, its label), from per-voxel label counts:
    sum_p CE = sum_v n_v logsumexp(l_v) - sum_v sum_k count_vk l_vk (no (P, K) tensor in autograd)."""
    k = logits.shape[1]
    counts = torch.bincount(point_voxel * k + labels, minlength=logits.numel()).view_as(logits).to(logits.dtype)
    return ((counts.sum(1) * torch.logsumexp(logits, 1)).sum() - (counts * logits).sum()) / max(len(point_voxel), 1)


def superpoint_voxel_mean(
    voxels: torch.Tensor, point_voxel: torch.Tensor, superpoint: torch.Tensor, count: int
) -> torch.Tensor:
    """(S, C) mean over each superpoint's points of their voxel's row of ``voxels`` (V, C), regrouped per
    (superpoint, voxel) pair weighted by its points: autograd sees (pairs, C), not (P, C)."""
    v = len(voxels)
    pairs, weight = torch.unique(superpoint * v + point_voxel, return_counts=True)
    summed = voxels.new_zeros((count, voxels.shape[1])).index_add_(
        0, pairs // v, voxels[pairs % v] * weight[:, None].to(voxels.dtype)
    )
    return summed / torch.bincount(superpoint, minlength=count).clamp(min=1)[:, None].to(voxels.dtype)


@dataclass
class SuperpointBatch:
    """A step's superpoints for SAS's superpoint loss, over the points with teacher features."""

    point_superpoint: torch.Tensor
    """(P,) superpoint of each point with a teacher feature, 0..S-1, each id used."""
    targets: torch.Tensor
    """(S, D) unit superpoint means of the teacher features."""


@dataclass
class TesdBatch:
    """A step's TESD pseudo labels, over every point of its scenes."""

    point_voxel: torch.Tensor
    """(N,) voxel of every point."""
    point_labels: torch.Tensor
    """(N,) pseudo label of each point."""
    superpoint: torch.Tensor | None
    """(N,) superpoint of each point, 0..S-1 (None: every point its own; the superpoint term is the point term)."""
    superpoint_labels: torch.Tensor | None
    """(S,) pseudo label of each superpoint."""
    text: ClassText
    temperature: float
    replace: bool
    """The TESD terms replace the teacher terms (SAS code) instead of adding to them (paper)."""


class LossTerms(NamedTuple):
    total: torch.Tensor
    cosine: torch.Tensor
    label: torch.Tensor
    superpoint: torch.Tensor
    tesd: torch.Tensor


@dataclass(frozen=True)
class Losses:
    cosine_weight: float = 1.0
    label_weight: float = 0.0
    label_temperature: float = 0.07
    superpoint_weight: float = 0.0

    def __call__(
        self,
        voxels: torch.Tensor,
        point_voxel: torch.Tensor,
        targets: torch.Tensor,
        labels: torch.Tensor | None,
        text: ClassText | None,
        superpoints: SuperpointBatch | None = None,
        tesd: TesdBatch | None = None,
    ) -> LossTerms:
        """The weighted total and each term; point terms are means over the points with teacher features.

        ``voxels`` (V, D) are the student's voxel features, ``point_voxel`` (P,) each
        point's voxel, ``targets`` (P, D) and ``labels`` (P,) its teacher feature and
        class. All points of a voxel share its prediction, so the point sums regroup
        per voxel: sum_p (1 - f_v(p).t_p) = P - sum_v f_v.(sum_{p in v} t_p) with unit
        f and t, and the cross-entropy from per-voxel label counts. The value is the
        per-point loss's (tests/test_distill.py), but autograd never touches a (P, D)
        tensor, which dominated the backward of the per-point form.

        SAS's superpoint term is mean_SP(1 - cos(teacher SP mean, student SP mean)) (Eq. 10),
        the student's SP mean regrouped per (superpoint, voxel); without ``superpoints``
        every point is its own superpoint and the term equals the cosine term. TESD's is
        CE(point logits, point pseudo label) + CE(SP-mean logits, SP pseudo label) (Eq. 13)
        over every point, with logits cos / temperature.
        """
        n = max(len(point_voxel), 1)
        student = F.normalize(voxels, dim=1)
        summed = torch.zeros_like(student).index_add_(0, point_voxel, F.normalize(targets.to(student.dtype), dim=1))
        cos_loss = 1 - (student * summed).sum() / n
        zero = torch.zeros((), device=voxels.device)
        label_loss = zero
        if self.label_weight > 0 and labels is not None and text is not None:
            label_loss = voxel_cross_entropy(text.logits(student, self.label_temperature), point_voxel, labels)
        sp_loss = zero
        if self.superpoint_weight > 0:
            sp_loss = cos_loss if superpoints is None else superpoint_loss(voxels, point_voxel, superpoints)
        total = self.cosine_weight * cos_loss + self.label_weight * label_loss + self.superpoint_weight * sp_loss
        tesd_loss = zero
        if tesd is not None:
            tesd_loss = tesd_ce(student, tesd)
            total = tesd_loss if tesd.replace else total + tesd_loss
        return LossTerms(total, cos_loss, label_loss, sp_loss, tesd_loss)


def superpoint_loss(voxels: torch.Tensor, point_voxel: torch.Tensor, superpoints: SuperpointBatch) -> torch.Tensor:
    """SAS's mean_SP(1 - cos(teacher SP mean, student SP mean)) (Eq. 10), the student's SP mean
    regrouped per (superpoint, voxel)."""
    count = len(superpoints.targets)
    means = superpoint_voxel_mean(voxels, point_voxel, superpoints.point_superpoint, count)
    return 1 - (F.normalize(means, dim=1) * superpoints.targets.to(means.dtype)).sum() / max(count, 1)


def tesd_ce(student: torch.Tensor, tesd: TesdBatch) -> torch.Tensor:
    """TESD's CE(point logits, point pseudo label) + CE(SP-mean logits, SP pseudo label) (Eq. 13)
    over every point, from the (V, D) unit voxel features; without superpoints twice the point term."""
    logits = tesd.text.logits(student, tesd.temperature)
    point_ce = voxel_cross_entropy(logits, tesd.point_voxel, tesd.point_labels)
    if tesd.superpoint is None or tesd.superpoint_labels is None:
        return 2 * point_ce
    count = len(tesd.superpoint_labels)
    sp_logits = superpoint_voxel_mean(logits, tesd.point_voxel, tesd.superpoint, count)
    return point_ce + F.cross_entropy(sp_logits, tesd.superpoint_labels)


@dataclass(frozen=True)
class Tesd:
    """SAS's temporal-ensembling self-distillation (``DistillConfig``'s ``tesd_*`` fields)."""

    start_epoch: int
    """First epoch (0-based) with TESD; its bank is initialised at the start of it."""
    text: ClassText
    """The pseudo labels' classes."""
    alpha: float = 0.9999
    temperature: float = 0.01
    replace: bool = False
    point_target: str = "point"
    """``point``: the argmax of the point's EMA scores (Eq. 12); ``superpoint``: its superpoint's."""
    bank: str = "point"
    """EMA of class scores per ``point`` or per ``superpoint``."""
    bank_dtype: torch.dtype = torch.float16


def superpoint_count(superpoint: torch.Tensor | None, num_points: int) -> int:
    return num_points if superpoint is None else int(superpoint.max()) + 1 if len(superpoint) else 0


def bank_entry(scores: torch.Tensor, superpoint: torch.Tensor | None, tesd: Tesd) -> torch.Tensor:
    """What the bank keeps of (N, K) per-point class scores: them, or their superpoint means."""
    if tesd.bank == "superpoint" and superpoint is not None:
        return superpoint_mean(scores, superpoint.to(scores.device), superpoint_count(superpoint, len(scores)))
    return scores.float()


def pseudo_labels(
    bank: torch.Tensor, superpoint: torch.Tensor | None, tesd: Tesd
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N,) point and (S,) superpoint pseudo labels (Eq. 12) from a scene's bank entry; the superpoint's
    is the argmax of the superpoint mean of the EMA scores (None without superpoints: the points')."""
    if superpoint is None:
        return bank.float().argmax(1), None
    if tesd.bank == "superpoint":
        sp_labels = bank.float().argmax(1)
        return sp_labels[superpoint], sp_labels
    sp_labels = superpoint_mean(bank, superpoint, superpoint_count(superpoint, len(bank))).argmax(1)
    return (sp_labels[superpoint] if tesd.point_target == "superpoint" else bank.float().argmax(1)), sp_labels


@torch.no_grad()
def initial_entry(model: MinkUNet, scene: SceneData, tesd: Tesd, device: torch.device) -> torch.Tensor:
    """A scene's bank entry at the switch epoch: the model's class scores in eval mode on the whole,
    unaugmented scene (SAS code)."""
    model.eval()
    x, (point_map,) = sparse_input([(scene.points, scene.colors)], model.config, device)
    scores = tesd.text.to(device).logits(F.normalize(model(x), dim=1), 1.0)[point_map].cpu()
    model.train()
    return bank_entry(scores, scene.superpoints, tesd).to(tesd.bank_dtype)


def share_entry(entry: torch.Tensor | None, src: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Rank ``src``'s ``entry`` on every rank (its shape first: the others have not read its scene)."""
    shape = torch.tensor(entry.shape if entry is not None else (0, 0), dtype=torch.int64)
    broadcast_(shape, src, device)
    shared = entry if entry is not None else torch.empty(tuple(shape.tolist()), dtype=dtype)
    broadcast_(shared, src, device)
    return shared


def broadcast_(tensor: torch.Tensor, src: int, device: torch.device) -> None:
    """In place, from rank ``src`` (through ``device`` where the backend needs it: NCCL)."""
    if dist.get_backend() == "nccl":
        on_device = tensor.to(device)
        dist.broadcast(on_device, src)
        tensor.copy_(on_device.cpu())
    else:
        dist.broadcast(tensor, src)


def world() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), size) if size > 1 else (0, 1)


def rank_share(step_scenes: list[int], rank: int, size: int) -> tuple[list[int], list[float]]:
    """This rank's share of one step's scenes and their loss weights (1 real, 0 padding).

    A last batch smaller than the world leaves some ranks without a scene. Such a rank
    takes the step's first scene with weight 0 instead of skipping the step: DDP needs
    every rank in every backward, and a rank that skips alone hangs the others.
    """
    share = step_scenes[rank::size]
    return (share, [1.0] * len(share)) if share else (step_scenes[:1], [0.0])


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("epoch_*.pt"))
    return found[-1] if found else None


def resume(
    checkpoints: Path, device: torch.device, optimizer: torch.optim.Optimizer, epochs: int, **modules: nn.Module
) -> tuple[list[dict], int, dict]:
    """Load the latest epoch checkpoint in ``checkpoints`` (created if missing) into the optimizer
    and the named modules; returns its log rows, the next epoch and the whole state ({}: none)."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    found = latest_checkpoint(checkpoints)
    if found is None:
        return [], 0, {}
    state = torch.load(found, map_location=device, weights_only=True)
    for name, module in modules.items():
        module.load_state_dict(state[name])
    optimizer.load_state_dict(state["optimizer"])
    log.info("distill: resuming from %s (epoch %d of %d)", found, state["epoch"] + 1, epochs)
    return state["rows"], state["epoch"] + 1, state


def save_atomically(obj: object, path: Path) -> None:
    """``torch.save`` through a temporary name of this process's own (two runs of one group on a
    shared folder never write one file), then a rename."""
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


@contextmanager
def deterministic_algorithms():
    """Kernels that add in a varying order would make a resumed run drift from an
    uninterrupted one (the CPU backward of a point-to-voxel gather did, before the
    losses were regrouped per voxel); warn-only, as not every op has such a mode."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


@dataclass(frozen=True)
class TrainRun:
    """What ``train`` needs besides the scenes (what ``DistillConfig`` turns into)."""

    student: StudentConfig
    channels: int
    """Teacher feature channels D: the student's output."""
    schedule: Schedule
    augment: Augment
    losses: Losses
    epochs: int
    batch_size: int
    """Scenes per step, over all processes."""
    seed: int
    text: ClassText | None = None
    """The label loss's classes."""
    tesd: Tesd | None = None
    prefetch_steps: int = 0
    """Steps whose scenes a background thread reads while the current one trains (0: none)."""


def train(
    scenes: SceneSource[SceneData],
    run: TrainRun,
    device: torch.device,
    checkpoints: Path,
    validation: tuple[SceneSource[SceneData], Validation] | None = None,
) -> tuple[MinkUNet, list[dict]]:
    """Train (or resume from the last epoch checkpoint in ``checkpoints``) and return the model
    and the per-step log rows; with ``validation`` (held-out scenes and their record) the loss
    on them after every epoch, early stopping and the best epoch's weights (``models.validation``)."""
    with deterministic_algorithms():
        trainer = Trainer(scenes, run, device, checkpoints, validation)
        for epoch in progress(range(trainer.start, run.epochs), "distill", unit="epoch"):
            if trainer.validation is not None and trainer.validation.done():
                break
            trainer.epoch(epoch)
        if trainer.validation is not None:
            trainer.validation.publish({"model": trainer.model})
        return trainer.model, trainer.rows


class StepScene(NamedTuple):
    """A scene as a step takes it, read with what is derived from it alone."""

    scene: SceneData
    superpoints: SuperpointBatch | None
    """Its teacher superpoints (superpoint loss)."""
    bank: torch.Tensor | None
    """Its TESD bank entry before this visit."""


class Trainer:
    """One distillation run: the model (DDP-wrapped under torchrun), its optimiser, the log rows
    and TESD's bank files, resumed from the last checkpoint if there is one. It holds a step's
    scenes at a time (and ``prefetch_steps`` more), never the split's."""

    def __init__(
        self,
        scenes: SceneSource[SceneData],
        run: TrainRun,
        device: torch.device,
        checkpoints: Path,
        validation: tuple[SceneSource[SceneData], Validation] | None = None,
    ) -> None:
        self.scenes, self.run, self.device, self.checkpoints = scenes, run, device, checkpoints
        self.val_scenes, self.validation = validation if validation is not None else ([], None)
        self.rank, self.size = world()
        if run.batch_size < self.size:
            raise ValueError(f"batch_size {run.batch_size} is smaller than the {self.size} distributed processes")
        torch.manual_seed(run.seed)
        self.model = MinkUNet(run.student, run.channels, device).to(device)
        self.optimizer = run.schedule.optimizer_for(self.model.parameters())
        self.rows, self.start, state = resume(checkpoints, device, self.optimizer, run.epochs, model=self.model)
        self.bank = BankFiles(checkpoints)
        self.bank_epoch: int | None = state.get("tesd_bank_epoch")
        """The bank generation the next epoch reads (None: TESD has not started)."""
        if state.get("tesd_bank") is not None:  # a checkpoint written when checkpoints held the bank whole
            for i, entry in enumerate(state["tesd_bank"]):
                self.bank.write(state["epoch"], i, entry.cpu())
            self.bank_epoch = state["epoch"]
        if self.bank_epoch is not None:
            self.bank.check(self.bank_epoch, len(scenes))
        if self.validation is not None:
            self.validation.resume(state.get("validation"))
        self.ddp: nn.Module = nn.parallel.DistributedDataParallel(self.model) if self.size > 1 else self.model
        self.steps_per_epoch = math.ceil(len(scenes) / run.batch_size)
        self.text = run.text.to(device) if run.text is not None else None
        self.tesd_text = run.tesd.text.to(device) if run.tesd is not None else None

    def epoch(self, epoch: int) -> None:
        """The epoch's steps in an order and with augmentations drawn from (seed, epoch), then
        its checkpoint; TESD's bank is initialised at the start of its first epoch."""
        run = self.run
        generator = epoch_generator(run.seed, epoch)
        order = torch.randperm(len(self.scenes), generator=generator).tolist()
        draws = {i: run.augment.draw(generator) for i in order}  # same draws on every rank
        tesd_on = run.tesd is not None and epoch >= run.tesd.start_epoch
        if tesd_on and self.bank_epoch is None:  # the switch epoch (a run resumed after it has the bank)
            self.initial_bank(epoch - 1)
            self.bank_epoch = epoch - 1
            log.info("distill: TESD from epoch %d on", epoch)
        self.ddp.train()
        steps = [order[step * run.batch_size : (step + 1) * run.batch_size] for step in range(self.steps_per_epoch)]
        shares = [rank_share(scenes_in_step, self.rank, self.size)[0] for scenes_in_step in steps]
        read = partial(self.read, self.bank_epoch if tesd_on else None)
        with closing(prefetched(read, shares, run.prefetch_steps)) as loaded:
            for step, scenes_in_step in enumerate(steps):  # next(): no reference to a past step's scenes stays
                self.step(epoch, step, scenes_in_step, next(loaded), draws, tesd_on)
        if self.validation is not None:
            self.validation.record(self.validation_loss(), {"model": self.model})
            self.rows[-1]["val_loss"] = self.validation.losses[-1]
        if self.rank == 0:
            state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
            state |= {"epoch": epoch, "rows": self.rows, "tesd_bank_epoch": epoch if tesd_on else None}
            state |= {"validation": self.validation.state() if self.validation is not None else None}
            save_atomically(state, self.checkpoints / f"epoch_{epoch:04d}.pt")
        if self.size > 1:
            dist.barrier()
        if tesd_on:  # after the checkpoint naming the new generation (the barrier: on every rank)
            self.bank_epoch = epoch
            self.bank.remove_before(epoch)

    def read(self, bank_epoch: int | None, batch: list[int]) -> dict[int, StepScene]:
        """The scenes ``batch`` as a step takes them, their bank entries from generation ``bank_epoch``."""
        return {
            i: self.prepared(self.scenes[i], self.bank.read(bank_epoch, i) if bank_epoch is not None else None)
            for i in batch
        }

    def prepared(self, scene: SceneData, bank: torch.Tensor | None = None) -> StepScene:
        with_superpoints = self.run.losses.superpoint_weight > 0 and scene.superpoints is not None
        return StepScene(scene, superpoint_targets(scene) if with_superpoints else None, bank)

    def step(
        self,
        epoch: int,
        step: int,
        scenes_in_step: list[int],
        loaded: dict[int, StepScene],
        draws: dict[int, torch.Tensor],
        tesd_on: bool,
    ) -> None:
        run = self.run
        batch, weights = rank_share(scenes_in_step, self.rank, self.size)
        scenes = [loaded[i].scene for i in batch]
        real = sum(weights)
        global_step = epoch * self.steps_per_epoch + step
        lr = run.schedule.apply(self.optimizer, global_step, self.steps_per_epoch * run.epochs)
        augmented = [(run.augment.apply(s.points, draws[i]), s.colors) for i, s in zip(batch, scenes)]
        x, maps = sparse_input(augmented, run.student, self.device)
        point_voxel, target, labels = scene_targets(scenes, maps, self.device)
        superpoints = superpoint_batch([loaded[i].superpoints for i in batch], self.device)
        tesd_batch, entries = None, [loaded[i].bank for i in batch]
        if tesd_on:
            assert run.tesd is not None and self.tesd_text is not None
            tesd_batch = tesd_step_batch(scenes, entries, maps, run.tesd, self.tesd_text, self.device)
        voxels = self.ddp(x)
        terms = run.losses(voxels, point_voxel, target, labels, self.text, superpoints, tesd_batch)
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks: weighting each rank by its share of the step's real
        # scenes makes that average the scene-weighted mean, to which a padding-only rank adds
        # zeros (the factor is 1 for a single process)
        (terms.total * (real * self.size / len(scenes_in_step))).backward()
        self.optimizer.step()
        if tesd_on:
            assert run.tesd is not None and self.tesd_text is not None
            updated = updated_entries(entries, voxels.detach(), weights, maps, scenes, run.tesd, self.tesd_text)
            self.write_bank(epoch, dict(zip(batch, updated)), scenes_in_step)
        self.rows.append({"epoch": epoch, "step": global_step, "lr": lr, **self.logged(terms, real)})

    def initial_bank(self, generation: int) -> None:
        """The switch epoch's bank, written as generation ``generation``: scene i computed by rank
        i % size, which reads only its own scenes."""
        assert self.run.tesd is not None
        tesd = self.run.tesd
        mine = range(self.rank, len(self.scenes), self.size)
        with closing(prefetched(self.scenes.__getitem__, mine, self.run.prefetch_steps)) as loaded:
            for i in range(len(self.scenes)):
                entry = None
                if i % self.size == self.rank:
                    entry = initial_entry(self.model, next(loaded), tesd, self.device)
                if self.size > 1:
                    entry = share_entry(entry, i % self.size, tesd.bank_dtype, self.device)
                assert entry is not None
                self.bank.write(generation, i, entry)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The objective's teacher terms (TESD's self-produced ones left out) on each whole,
        unaugmented validation scene, read one at a time, model in eval mode; their mean."""
        self.model.eval()
        scenes = self.val_scenes
        read = prefetched(lambda i: self.prepared(scenes[i]), range(len(scenes)), self.run.prefetch_steps)
        with closing(read):
            losses = [self.validation_term(next(read)) for _ in range(len(scenes))]
        self.model.train()
        return sum(losses) / max(len(losses), 1)

    def validation_term(self, loaded: StepScene) -> float:
        x, maps = sparse_input([(loaded.scene.points, loaded.scene.colors)], self.run.student, self.device)
        point_voxel, target, labels = scene_targets([loaded.scene], maps, self.device)
        superpoints = superpoint_batch([loaded.superpoints], self.device)
        return self.run.losses(self.model(x), point_voxel, target, labels, self.text, superpoints).total.item()

    def logged(self, terms: LossTerms, real: float) -> dict[str, float]:
        """The step's loss terms as logged: under DDP every rank logs (and publishes) the same
        numbers, the mean over the step's real scenes."""
        logged = torch.stack([t.detach() for t in terms])
        if self.size > 1:
            summed = torch.cat([logged * real, logged.new_tensor([real])])
            dist.all_reduce(summed)
            logged = summed[:-1] / summed[-1]
        names = ("loss", "cosine_loss", "label_loss", "superpoint_loss", "tesd_loss")
        return {name: value.item() for name, value in zip(names, logged)}

    def write_bank(self, epoch: int, updated: dict[int, torch.Tensor | None], step: list[int]) -> None:
        """This visit's entries into generation ``epoch``; under DDP each visited scene's is sent from
        the rank that visited it to every other, and each rank writes them all."""
        assert self.run.tesd is not None
        if self.size == 1:
            for i, entry in updated.items():
                if entry is not None:
                    self.bank.write(epoch, i, entry)
            return
        for owner in range(self.size):
            for i, w in zip(*rank_share(step, owner, self.size)):
                if w:
                    mine = updated[i] if owner == self.rank else None
                    self.bank.write(epoch, i, share_entry(mine, owner, self.run.tesd.bank_dtype, self.device))


def scene_targets(
    scenes: list[SceneData], maps: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The points with teacher features of a batch of scenes: their voxel, feature and (label loss) class."""
    point_voxel, target, labels = [], [], []
    for scene, point_map in zip(scenes, maps):
        seen = scene.seen.to(device)
        point_voxel.append(point_map[seen])
        target.append(scene.targets.to(device)[seen])
        if scene.labels is not None:
            labels.append(scene.labels.to(device)[seen])
    return torch.cat(point_voxel), torch.cat(target), torch.cat(labels) if labels else None


def superpoint_targets(scene: SceneData) -> SuperpointBatch:
    """A scene's superpoints among its points with teacher features (renumbered 0..S-1) and the unit
    superpoint means of their teacher features (SAS code: only where there is a 2D feature)."""
    assert scene.superpoints is not None
    ids, point_superpoint = torch.unique(scene.superpoints[scene.seen], return_inverse=True)
    means = superpoint_mean(scene.targets[scene.seen], point_superpoint, len(ids))
    return SuperpointBatch(point_superpoint, F.normalize(means, dim=1))


def superpoint_batch(per_scene: list[SuperpointBatch | None], device: torch.device) -> SuperpointBatch | None:
    """The scenes' superpoints, numbered on through the batch (None: no scene has superpoints)."""
    if any(s is None for s in per_scene):
        return None
    offsets = [0]
    for s in per_scene:
        assert s is not None
        offsets.append(offsets[-1] + len(s.targets))
    return SuperpointBatch(
        torch.cat([s.point_superpoint.to(device) + o for s, o in zip(per_scene, offsets) if s is not None]),
        torch.cat([s.targets.to(device) for s in per_scene if s is not None]),
    )


def tesd_step_batch(
    scenes: list[SceneData],
    bank: list[torch.Tensor],
    maps: list[torch.Tensor],
    tesd: Tesd,
    text: ClassText,
    device: torch.device,
) -> TesdBatch:
    """The pseudo labels of a step's scenes from the bank as it stands before their visit."""
    point_labels, sp, sp_labels, offset = [], [], [], 0
    for scene, entry in zip(scenes, bank):
        superpoint = scene.superpoints.to(device) if scene.superpoints is not None else None
        points, superpoints = pseudo_labels(entry.to(device), superpoint, tesd)
        point_labels.append(points)
        if superpoint is not None and superpoints is not None:
            sp.append(superpoint + offset)
            sp_labels.append(superpoints)
            offset += len(superpoints)
    has_sp = len(sp) == len(scenes)
    return TesdBatch(
        torch.cat(maps),
        torch.cat(point_labels),
        torch.cat(sp) if has_sp else None,
        torch.cat(sp_labels) if has_sp else None,
        text,
        tesd.temperature,
        tesd.replace,
    )


@torch.no_grad()
def updated_entries(
    entries: list[torch.Tensor],
    voxels: torch.Tensor,
    weights: list[float],
    maps: list[torch.Tensor],
    scenes: list[SceneData],
    tesd: Tesd,
    text: ClassText,
) -> list[torch.Tensor | None]:
    """bank = alpha bank + (1 - alpha) current (Eq. 11) for this rank's real scenes of the step (None
    for padding: the scene's own rank updates it), current being the class scores of this visit's
    (augmented, training-mode) forward pass."""
    scores = text.logits(F.normalize(voxels, dim=1), 1.0)
    updated: list[torch.Tensor | None] = []
    for entry, w, point_map, scene in zip(entries, weights, maps, scenes):
        if not w:
            updated.append(None)
            continue
        current = bank_entry(scores[point_map], scene.superpoints, tesd).cpu()
        updated.append((tesd.alpha * entry.float() + (1 - tesd.alpha) * current).to(tesd.bank_dtype))
    return updated


LOG_FIELDS = ("epoch", "step", "loss", "cosine_loss", "label_loss", "lr", "superpoint_loss", "tesd_loss", "val_loss")
"""Columns of the training log (rows of a run started before a column existed leave it empty;
``val_loss``: on each epoch's last step, with validation)."""


def write_log(rows: list[dict], folder: Path, fields: tuple[str, ...] = LOG_FIELDS) -> tuple[Path, Path]:
    """The per-step loss and learning rate as CSV and as a PNG plot (rank 0 writes)."""
    from ovlift.plots import training_curves

    csv_path, png_path = folder / "training_log.csv", folder / "training_curves.png"
    if world()[0] != 0:
        return csv_path, png_path
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path, training_curves(rows, png_path)
