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
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ovlift.models.student import MinkUNet, sparse_input
from ovlift.models.student_config import StudentConfig
from ovlift.progress import progress

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


@dataclass(frozen=True)
class Schedule:
    optimizer: str
    lr: float
    final_lr: float
    kind: str
    weight_decay: float

    def lr_at(self, step: int, total: int) -> float:
        """Cosine or linear from ``lr`` to ``final_lr`` over ``total`` steps."""
        t = min(step / max(total, 1), 1.0)
        if self.kind == "cosine":
            return self.final_lr + (self.lr - self.final_lr) * (1 + math.cos(math.pi * t)) / 2
        return self.lr + (self.final_lr - self.lr) * t


@dataclass(frozen=True)
class Augment:
    rotate_z: bool = True
    flip: bool = True
    scale: tuple[float, float] = (0.9, 1.1)

    def __call__(self, points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        r = torch.rand(4, generator=generator, dtype=torch.float64)
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


@dataclass(frozen=True)
class Losses:
    cosine_weight: float = 1.0
    label_weight: float = 0.0
    label_temperature: float = 0.07

    def __call__(
        self,
        voxels: torch.Tensor,
        point_voxel: torch.Tensor,
        targets: torch.Tensor,
        labels: torch.Tensor | None,
        text: ClassText | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, cosine, label): means over the points with teacher features.

        ``voxels`` (V, D) are the student's voxel features, ``point_voxel`` (P,) each
        point's voxel, ``targets`` (P, D) and ``labels`` (P,) its teacher feature and
        class. All points of a voxel share its prediction, so the point sums regroup
        per voxel: sum_p (1 - f_v(p).t_p) = P - sum_v f_v.(sum_{p in v} t_p) with unit
        f and t, and the cross-entropy from per-voxel label counts. The value is the
        per-point loss's (tests/test_distill.py), but autograd never touches a (P, D)
        tensor, which dominated the backward of the per-point form.
        """
        n = max(len(point_voxel), 1)
        student = F.normalize(voxels, dim=1)
        summed = torch.zeros_like(student).index_add_(0, point_voxel, F.normalize(targets.to(student.dtype), dim=1))
        cos_loss = 1 - (student * summed).sum() / n
        label_loss = torch.zeros((), device=voxels.device)
        if self.label_weight > 0 and labels is not None and text is not None:
            logits = text.logits(student, self.label_temperature)
            k = logits.shape[1]
            counts = torch.bincount(point_voxel * k + labels, minlength=logits.numel()).view_as(logits).to(logits.dtype)
            label_loss = ((counts.sum(1) * torch.logsumexp(logits, 1)).sum() - (counts * logits).sum()) / n
        return self.cosine_weight * cos_loss + self.label_weight * label_loss, cos_loss, label_loss


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


def save_atomically(obj: object, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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


def train(
    scenes: list[SceneData],
    student: StudentConfig,
    out_channels: int,
    schedule: Schedule,
    augment: Augment,
    losses: Losses,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    checkpoints: Path,
    text: ClassText | None = None,
) -> tuple[MinkUNet, list[dict]]:
    """Train (or resume) and return the model and the per-step log rows."""
    with deterministic_algorithms():
        rank, size = world()
        if batch_size < size:
            raise ValueError(f"batch_size {batch_size} is smaller than the {size} distributed processes")
        torch.manual_seed(seed)
        model = MinkUNet(student, out_channels, device).to(device)
        opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[schedule.optimizer]
        optimizer = opt_cls(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
        rows: list[dict] = []
        start = 0
        checkpoints.mkdir(parents=True, exist_ok=True)
        resume = latest_checkpoint(checkpoints)
        if resume is not None:
            state = torch.load(resume, map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            rows, start = state["rows"], state["epoch"] + 1
            log.info("distill: resuming from %s (epoch %d of %d)", resume, start, epochs)
        ddp: nn.Module = nn.parallel.DistributedDataParallel(model) if size > 1 else model
        steps_per_epoch = math.ceil(len(scenes) / batch_size)
        total = steps_per_epoch * epochs
        text_dev = text.to(device) if text is not None else None
        for epoch in progress(range(start, epochs), "distill", unit="epoch"):
            generator = epoch_generator(seed, epoch)
            order = torch.randperm(len(scenes), generator=generator).tolist()
            augmented = {i: augment(scenes[i].points, generator) for i in order}  # same draws on every rank
            ddp.train()
            for step in range(steps_per_epoch):
                scenes_in_step = order[step * batch_size : (step + 1) * batch_size]
                batch, weights = rank_share(scenes_in_step, rank, size)
                real = sum(weights)
                lr = schedule.lr_at(epoch * steps_per_epoch + step, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, maps = sparse_input([(augmented[i], scenes[i].colors) for i in batch], student, device)
                point_voxel, target, labels = [], [], []
                for i, point_map in zip(batch, maps):
                    seen = scenes[i].seen.to(device)
                    point_voxel.append(point_map[seen])
                    target.append(scenes[i].targets.to(device)[seen])
                    if scenes[i].labels is not None:
                        labels.append(scenes[i].labels.to(device)[seen])
                loss, cos_loss, label_loss = losses(
                    ddp(x), torch.cat(point_voxel), torch.cat(target), torch.cat(labels) if labels else None, text_dev
                )
                optimizer.zero_grad(set_to_none=True)
                # DDP averages gradients over ranks: weighting each rank by its share of the step's real
                # scenes makes that average the scene-weighted mean, to which a padding-only rank adds
                # zeros (the factor is 1 for a single process)
                (loss * (real * size / len(scenes_in_step))).backward()
                optimizer.step()
                logged = torch.stack([loss.detach(), cos_loss.detach(), label_loss.detach()])
                if size > 1:  # every rank logs (and publishes) the same numbers: the mean over the real scenes
                    summed = torch.cat([logged * real, logged.new_tensor([real])])
                    dist.all_reduce(summed)
                    logged = summed[:3] / summed[3]
                rows.append(
                    {
                        "epoch": epoch,
                        "step": epoch * steps_per_epoch + step,
                        "loss": logged[0].item(),
                        "cosine_loss": logged[1].item(),
                        "label_loss": logged[2].item(),
                        "lr": lr,
                    }
                )
            if rank == 0:
                save_atomically(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "rows": rows},
                    checkpoints / f"epoch_{epoch:04d}.pt",
                )
            if size > 1:
                dist.barrier()
        return model, rows


def write_log(rows: list[dict], folder: Path) -> tuple[Path, Path]:
    """The per-step loss and learning rate as CSV and as a PNG plot (rank 0 writes)."""
    from ovlift.plots import training_curves

    csv_path, png_path = folder / "training_log.csv", folder / "training_curves.png"
    if world()[0] != 0:
        return csv_path, png_path
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "step", "loss", "cosine_loss", "label_loss", "lr"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path, training_curves(rows, png_path)
