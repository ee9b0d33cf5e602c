"""``distill`` (global): train the 3D student on the training scenes' fused features.

Reads every scene of its split (``input`` points, ``project``'s fused features of
one teacher), trains the sparse U-Net with the cosine loss on points that have
teacher features (OpenScene) and optionally CUS3D's label loss, checkpoints
every epoch beside the store (a killed run resumes there) and publishes the
final weights, the loss curve and the training log.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from ovlift.cache_schema import GroupWriter
from ovlift.cache_schema.groups.distill import DISTILL_SPEC
from ovlift.cache_schema.groups.lifted import FeatureSource, lifted_features
from ovlift.config import FrozenConfig, runtime_field
from ovlift.errors import StageInputError
from ovlift.kernels.classify import classify
from ovlift.models.student_config import StudentConfig
from ovlift.models.text import TextEncoderConfig
from ovlift.stages.base import Stage, StageContext
from ovlift.vocabularies import get_vocabulary


class DistillConfig(FrozenConfig):
    split: str = "train"
    """Plan split of the training scenes (``all``: every scene)."""
    source: FeatureSource = "project"
    """Teacher features to distil: ``project`` (fused, OpenScene), ``denoise`` (CUS3D) or ``fuse`` (SAS)."""
    teacher: str | None = None
    """Teacher to distil (None: the only one; ``fuse``'s set is named ``fused:<a>+<b>``)."""
    student: StudentConfig = StudentConfig()
    """The 3D network."""
    optimizer: Literal["adam", "adamw"] = "adam"
    """Optimiser (OpenScene: Adam)."""
    lr: float = Field(1e-4, gt=0)
    """Initial learning rate (OpenScene, SAS: 1e-4)."""
    final_lr: float = Field(1e-5, ge=0)
    """Learning rate at the last step (SAS: linear 1e-4 -> 1e-5)."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Decay from lr to final_lr."""
    weight_decay: float = Field(0.0, ge=0)
    """Weight decay."""
    epochs: int = Field(100, ge=1)
    """Passes over the training scenes."""
    batch_size: int = Field(2, ge=1)
    """Scenes per step (over all processes)."""
    rotate_z: bool = True
    """Augment: rotation about z by up to +-pi."""
    flip: bool = True
    """Augment: random flips of x and y."""
    scale: tuple[float, float] = (0.9, 1.1)
    """Augment: uniform scaling range."""
    cosine_weight: float = Field(1.0, ge=0)
    """Weight of the cosine feature loss (1 - cos)."""
    label_weight: float = Field(0.0, ge=0)
    """Weight of CUS3D's label loss (student vs teacher classification over the vocabulary)."""
    label_temperature: float = Field(0.01, gt=0)
    """Temperature tau of the label loss's logits cos / tau (CUS3D: 0.01)."""
    vocabulary: str = "scannet20"
    """Vocabulary of the label loss."""
    templates: Literal["single", "ensemble"] = "single"
    """Templates of the label loss's class embeddings."""
    seed: int = 0
    """Seeds initialisation, scene order and augmentation."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's."""


class DistillStage(Stage[DistillConfig]):
    implementation = "openscene"
    version = "2"  # 2: losses regrouped per voxel (same value, other rounding)
    spec = DISTILL_SPEC
    reads = ("input", "project")
    optional_reads = ("denoise", "fuse")
    writes_files = True

    def select_inputs(self, name: str, keys: list[str]) -> list[str]:
        return keys if name not in self.optional_reads or self.config.source == name else []

    def check_inputs(self, keys: list[str]) -> None:
        if self.config.source not in {k.split("/", 1)[0] for k in keys}:
            raise ValueError(f"source '{self.config.source}' needs that stage configured")

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        from ovlift.models.training import Augment, ClassText, Losses, SceneData, Schedule, train, write_log

        cfg = self.config
        device = torch.device(cfg.device or ctx.device)
        scenes, teacher, text_encoder = [], None, None
        for scene_id, groups in ctx.scene_inputs.items():
            lifted = lifted_features(groups, cfg.source, cfg.teacher, f"scene '{scene_id}'")
            teacher, text_encoder = lifted.teacher, lifted.text_encoder
            points = groups["input"]
            scenes.append(
                SceneData(
                    scene_id=scene_id,
                    points=torch.from_numpy(points.load("points")),
                    colors=torch.from_numpy(points.load("colors")) if "colors" in points else None,
                    targets=torch.from_numpy(lifted.features),
                    seen=torch.from_numpy(lifted.seen),
                )
            )
        if not scenes:
            raise StageInputError(f"{ctx.where()}: split '{cfg.split}' has no scenes to train on")
        if cfg.student.use_color and any(s.colors is None for s in scenes):
            raise StageInputError(f"{ctx.where()}: student.use_color needs point colours, which some scenes lack")
        text = None
        if cfg.label_weight > 0:
            vocab = get_vocabulary(cfg.vocabulary)
            prompts = ctx.text(TextEncoderConfig(**{**text_encoder, "templates": cfg.templates}), list(vocab.prompts))
            text = ClassText(prompts, torch.tensor(vocab.prompt_class), len(vocab.classes))
            for s in scenes:
                s.labels = classify(s.targets, prompts, text.prompt_class)[1]
        channels = int(scenes[0].targets.shape[1])
        assert ctx.files is not None
        model, rows = train(
            scenes,
            cfg.student,
            channels,
            Schedule(cfg.optimizer, cfg.lr, cfg.final_lr, cfg.schedule, cfg.weight_decay),
            Augment(cfg.rotate_z, cfg.flip, cfg.scale),
            Losses(cfg.cosine_weight, cfg.label_weight, cfg.label_temperature),
            cfg.epochs,
            cfg.batch_size,
            cfg.seed,
            device,
            ctx.files,
            text,
        )
        write_log(rows, ctx.files)
        buffer = io.BytesIO()
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
        out.write("weights", np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        epochs = sorted({r["epoch"] for r in rows})
        out.write(
            "epoch_loss", np.array([np.mean([r["loss"] for r in rows if r["epoch"] == e]) for e in epochs], np.float32)
        )
        out.write("epoch_lr", np.array([[r["lr"] for r in rows if r["epoch"] == e][-1] for e in epochs], np.float32))
        out.set_info(
            teacher=teacher,
            source=cfg.source,
            channels=channels,
            text_encoder=text_encoder,
            student=cfg.student.normalised(),
            train_scenes=[s.scene_id for s in scenes],
            checkpoints=str(ctx.files),
        )
