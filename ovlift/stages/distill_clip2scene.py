"""``distill`` implementation ``clip2scene``: CLIP2Scene's three terms on LiDAR + camera scenes.

Reads every training scene's ``input`` (points, per-point ``sweep``) and the fused
2D features ``project`` lifted onto them: a point's pixel feature is the mean of
the (MaskCLIP) features at the pixels it projects to in the key-frame cameras -
one pixel for most points, two where cameras overlap - and its pixel class is
that feature's nearest class text (MaskCLIP's argmax). The terms and the loop are
in ``ovlift.models.clip2scene``; the student is the sparse MinkUNet of
``ovlift.models.student`` (CLIP2Scene uses SPVCNN; this is the MinkUNet the
issue accepts) with its head as CLIP2Scene's global head and a second linear
head for the spatial-temporal term. The published weights are the MinkUNet with
its global head, so ``predict`` labels with it as with any student.

Defaults follow the issue: the semantic term in the code's cross-entropy form
(what trained the published numbers), the spatial-temporal term with pixel and
point features (paper), the self-training switch per step (code and paper). Other
defaults are the code's: 0.1 m voxels, 3 sweeps as separate samples, SGD lr 0.1
with momentum 0.9, dampening 0.1, weight decay 1e-4, cosine over 20 epochs,
switch from epoch 10 (0-based; the code's ``epoch > 10`` starts one later).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from ovlift.cache_schema import GroupWriter
from ovlift.cache_schema.groups.distill import DISTILL_SPEC, write_student
from ovlift.cache_schema.groups.lifted import lifted_features
from ovlift.config import FrozenConfig, runtime_field
from ovlift.errors import StageInputError
from ovlift.kernels.classify import classify
from ovlift.models.student_config import StudentConfig
from ovlift.stages.base import Stage, StageContext
from ovlift.vocabularies import get_vocabulary


class Clip2SceneDistillConfig(FrozenConfig):
    split: str = "train"
    """Plan split of the training scenes (``all``: every scene)."""
    teacher: str | None = None
    """``project``'s fused teacher to learn from (None: the only one)."""
    vocabulary: str = "clip2scene-nuscenes16"
    """Class texts of the pixel labels and the semantic term: the text set of pretraining
    (CLIP2Scene: the 16 nuScenes names as its code spells them)."""
    templates: Literal["single", "ensemble"] = "ensemble"
    """Prompt templates of the class texts (CLIP2Scene: the 85-template ensemble)."""
    student: StudentConfig = StudentConfig(voxel_size_m=0.1)
    """The 3D network (CLIP2Scene: 0.1 m voxels)."""
    sweeps: int = Field(3, ge=1)
    """K: sweeps per scene per step, the key frame and K - 1 drawn from the others (paper: 3)."""
    sweep_input: Literal["separate", "merged"] = "separate"
    """Each drawn sweep its own sample (code) or the K merged into one (paper's ablation row)."""
    semantic: Literal["ce", "paper_eq1"] = "ce"
    """Semantic consistency: the code's cross-entropy or the paper's Eq. 1."""
    semantic_temperature: float | None = Field(None, gt=0)
    """tau of the semantic logits (None: 1 for ``ce``, as the code; 0.5 for ``paper_eq1``)."""
    ssr_weight: float = Field(1.0, ge=0)
    """Weight of the spatial-temporal term (paper and code: 1; 0: off)."""
    ssr_features: Literal["pixels_and_points", "points"] = "pixels_and_points"
    """Cell centre from pixel and point features (paper, Eq. 3) or points only (code)."""
    ssr_lambda: float = Field(1.0, gt=0)
    """lambda of the cell attention (paper: 1)."""
    grid_m: float = Field(0.1, gt=0)
    """Cell edge of the merged cloud (code: 0.1 m; the paper gives none)."""
    max_per_grid: int = Field(8, ge=1)
    """Pairs kept per cell (code: 8)."""
    self_training_start: int | None = Field(10, ge=0)
    """First epoch (0-based) of switchable self-training (paper: after 10); None: off."""
    self_training_p: float = Field(0.5, ge=0, le=1)
    """Probability that a step (or point) trains on its own predictions (paper and code: 0.5; 1: ST only)."""
    self_training_switch: Literal["batch", "point"] = "batch"
    """One coin flip per step for the whole batch (code) or one per point."""
    unpaired_weight: float = Field(0.0, ge=0)
    """Self-training term on points no camera sees, on the steps that self-train (the code's dead term; 0: off)."""
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    """Optimiser (code: SGD, momentum 0.9, dampening 0.1)."""
    lr: float = Field(0.1, gt=0)
    """Initial learning rate (code: 0.1)."""
    final_lr: float = Field(0.0, ge=0)
    """Learning rate at the last step."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Decay from lr to final_lr (code: cosine)."""
    weight_decay: float = Field(1e-4, ge=0)
    """Weight decay (code: 1e-4)."""
    epochs: int = Field(20, ge=1)
    """Passes over the training scenes (paper: 20)."""
    batch_size: int = Field(4, ge=1)
    """Key frames per step (code: 4 per GPU)."""
    rotate_z: bool = True
    """Augment: rotation about z by up to +-pi."""
    flip: bool = True
    """Augment: random flips of x and y."""
    scale: tuple[float, float] = (1.0, 1.0)
    """Augment: uniform scaling range (CLIP2Scene: none)."""
    seed: int = 0
    """Seeds initialisation, scene order, sweep draws, augmentation and the switch."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's."""

    def temperature(self) -> float:
        if self.semantic_temperature is not None:
            return self.semantic_temperature
        return 1.0 if self.semantic == "ce" else 0.5


class Clip2SceneDistillStage(Stage[Clip2SceneDistillConfig]):
    implementation = "clip2scene"
    version = "2"  # 2: semantic CE from per-voxel label counts (same value, other rounding)
    spec = DISTILL_SPEC
    computes_on_device = True
    memory_gb = 8.0  # every training scene in memory
    reads = ("input", "project")
    writes_files = True

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        from ovlift.models.clip2scene import (
            LOG_FIELDS,
            Clip2SceneRun,
            Clip2SceneTerms,
            SweepScene,
            class_embeddings,
            train_clip2scene,
        )
        from ovlift.models.training import Augment, ClassText, Schedule, write_log

        cfg = self.config
        device = torch.device(cfg.device or ctx.device)
        vocab = get_vocabulary(cfg.vocabulary)
        scenes, teacher, text_encoder, text = [], None, None, None
        for scene_id, groups in sorted(ctx.scene_inputs.items()):
            lifted = lifted_features(groups, "project", cfg.teacher, f"scene '{scene_id}'")
            teacher, text_encoder = lifted.teacher, lifted.text_encoder
            if text is None:
                assert ctx.text is not None
                text = ClassText.embed(vocab, ctx.text, text_encoder, cfg.templates)
            points = groups["input"]
            features = torch.from_numpy(lifted.features)
            labels = classify(features, text.prompts, text.prompt_class)[1]
            n = len(features)
            sweep = (
                torch.from_numpy(points.load("sweep").astype(np.int64))
                if "sweep" in points
                else torch.zeros(n, dtype=torch.int64)
            )
            scenes.append(
                SweepScene(
                    scene_id,
                    torch.from_numpy(points.load("points")),
                    sweep,
                    features,
                    torch.where(torch.from_numpy(lifted.seen), labels, -1),
                )
            )
        if not scenes or text is None:
            raise StageInputError(f"{ctx.where()}: split '{cfg.split}' has no scenes to train on")
        channels = int(scenes[0].pixel_features.shape[1])
        run = Clip2SceneRun(
            student=cfg.student,
            channels=channels,
            text=text,
            class_embeddings=class_embeddings(text),
            terms=Clip2SceneTerms(
                cfg.semantic,
                cfg.temperature(),
                cfg.ssr_weight,
                cfg.ssr_features,
                cfg.ssr_lambda,
                cfg.grid_m,
                cfg.max_per_grid,
                cfg.self_training_start,
                cfg.self_training_p,
                cfg.self_training_switch,
                cfg.unpaired_weight,
            ),
            schedule=Schedule(cfg.optimizer, cfg.lr, cfg.final_lr, cfg.schedule, cfg.weight_decay),
            augment=Augment(cfg.rotate_z, cfg.flip, cfg.scale),
            sweeps=cfg.sweeps,
            sweep_input=cfg.sweep_input,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
        assert ctx.files is not None
        model, rows = train_clip2scene(scenes, run, device, ctx.files)
        write_log(rows, ctx.files, LOG_FIELDS)
        write_student(out, model.state_dict(), rows)
        paired = sum(int((s.pixel_labels >= 0).sum()) for s in scenes)
        out.set_info(
            teacher=teacher,
            source="project",
            channels=channels,
            text_encoder=text_encoder,
            student=cfg.student.normalised(),
            train_scenes=[s.scene_id for s in scenes],
            checkpoints=ctx.files_url,
            superpoints="none",
            tesd=None,
            sweep_input=cfg.sweep_input,
            sweeps=cfg.sweeps,
            clip2scene={
                "vocabulary": vocab.key,
                "classes": list(vocab.classes),
                "paired_fraction": paired / max(sum(len(s.points) for s in scenes), 1),
            },
        )
