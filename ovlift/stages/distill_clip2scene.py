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

from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import Field

from ovlift.cache_schema import GroupWriter
from ovlift.cache_schema.groups.distill import DISTILL_SPEC, write_student
from ovlift.cache_schema.groups.lifted import TrainingScene, TrainingScenes
from ovlift.kernels.classify import classify
from ovlift.models.student_config import StudentConfig
from ovlift.models.training_config import TrainingConfig
from ovlift.models.validation import Validation
from ovlift.stages.base import Stage, StageContext
from ovlift.vocabularies import get_vocabulary

if TYPE_CHECKING:  # the training loop imports spconv, which takes seconds: imported when run
    from ovlift.models.clip2scene import Clip2SceneRun, SweepScene
    from ovlift.models.training import ClassText


class Clip2SceneDistillConfig(
    TrainingConfig.with_defaults(
        vocabulary="clip2scene-nuscenes16",
        templates="ensemble",
        student=StudentConfig(voxel_size_m=0.1),
        optimizer="sgd",
        lr=0.1,
        final_lr=0.0,
        weight_decay=1e-4,
        epochs=20,
        batch_size=4,
        scale=(1.0, 1.0),
    )
):
    """CLIP2Scene's objective; the shared training fields default to CLIP2Scene's code (the
    vocabulary: the 16 nuScenes names as its code spells them)."""

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

    def temperature(self) -> float:
        if self.semantic_temperature is not None:
            return self.semantic_temperature
        return 1.0 if self.semantic == "ce" else 0.5


class Clip2SceneDistillStage(Stage[Clip2SceneDistillConfig]):
    implementation = "clip2scene"
    version = "3"  # 2: semantic CE from per-voxel label counts (same value, other rounding); 3: epoch_val_loss
    spec = DISTILL_SPEC
    computes_on_device = True
    memory_gb = 8.0  # a step's scenes (and prefetch_steps more), the student and its activations: not the split
    reads = ("input", "project")
    writes_files = True

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        from ovlift.models.clip2scene import LOG_FIELDS, train_clip2scene
        from ovlift.models.scene_stream import MappedScenes
        from ovlift.models.training import write_log

        cfg = self.config
        stored = TrainingScenes(
            dict(sorted(ctx.scene_inputs.items())), "project", cfg.teacher, False, ctx.where(), cfg.split
        )
        run = self._run_config(ctx, stored.text_encoder, stored.channels)
        scenes = MappedScenes(stored, partial(sweep_scene, text=run.text))
        validation = None
        if cfg.val_split is not None:
            inputs = dict(sorted(ctx.validation_inputs.items()))
            held_out = TrainingScenes(inputs, "project", cfg.teacher, False, ctx.where(), cfg.val_split)
            record = Validation(cfg.val_split, list(inputs), cfg.patience)
            validation = (MappedScenes(held_out, partial(sweep_scene, text=run.text)), record)
        assert ctx.files is not None
        model, rows = train_clip2scene(scenes, run, torch.device(cfg.device or ctx.device), ctx.files, validation)
        write_log(rows, ctx.files, LOG_FIELDS)
        write_student(out, model.state_dict(), rows)
        paired = points = 0  # a point is paired where it has a pixel feature (sweep_scene): read alone, per scene
        for i in range(len(stored)):
            seen = stored.seen(i)
            paired, points = paired + int(seen.sum()), points + len(seen)
        vocab = get_vocabulary(cfg.vocabulary)
        out.set_info(
            teacher=stored.teacher,
            source="project",
            channels=run.channels,
            text_encoder=stored.text_encoder,
            student=cfg.student.normalised(),
            train_scenes=stored.scene_ids,
            checkpoints=ctx.files_url,
            superpoints="none",
            tesd=None,
            sweep_input=cfg.sweep_input,
            sweeps=cfg.sweeps,
            validation=validation[1].info() if validation else None,
            clip2scene={
                "vocabulary": vocab.key,
                "classes": list(vocab.classes),
                "paired_fraction": paired / max(points, 1),
            },
        )

    def _run_config(self, ctx: StageContext, text_encoder: dict, channels: int) -> Clip2SceneRun:
        from ovlift.models.clip2scene import Clip2SceneRun, Clip2SceneTerms, class_embeddings
        from ovlift.models.training import ClassText

        cfg = self.config
        assert ctx.text is not None
        text = ClassText.embed(get_vocabulary(cfg.vocabulary), ctx.text, text_encoder, cfg.templates)
        terms = Clip2SceneTerms(
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
        )
        return Clip2SceneRun(
            student=cfg.student,
            channels=channels,
            text=text,
            class_embeddings=class_embeddings(text),
            terms=terms,
            schedule=cfg.optimisation(),
            augment=cfg.augmentation(),
            sweeps=cfg.sweeps,
            sweep_input=cfg.sweep_input,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            prefetch_steps=cfg.prefetch_steps,
        )


def sweep_scene(scene: TrainingScene, text: ClassText) -> SweepScene:
    """A training scene as CLIP2Scene pairs it: each point with a pixel feature gets that
    feature's nearest class text as its pixel class (MaskCLIP's argmax), the others -1."""
    from ovlift.models.clip2scene import SweepScene

    features = torch.from_numpy(scene.lifted.features)
    labels = classify(features, text.prompts, text.prompt_class)[1]
    n = len(features)
    sweep = torch.zeros(n, dtype=torch.int64) if scene.sweep is None else torch.from_numpy(scene.sweep.astype(np.int64))
    seen = torch.from_numpy(scene.lifted.seen)
    return SweepScene(scene.scene_id, torch.from_numpy(scene.points), sweep, features, torch.where(seen, labels, -1))
