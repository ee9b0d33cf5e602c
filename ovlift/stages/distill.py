"""``distill`` (global): train the 3D student on the training scenes' fused features.

Reads every scene of its split (``input`` points, one teacher's features from
``source``: ``project``'s fused ones or a later stage's), trains the sparse U-Net
with the cosine loss on points that have teacher features (OpenScene) and
optionally CUS3D's label loss, checkpoints every epoch beside the store (a killed
run resumes there) and publishes the final weights, the loss curve and the
training log.

SAS's objectives are options, off by default. Superpoint distillation (Eq. 10):
the cosine loss's point targets become superpoint means of the teacher features
(``superpoint_targets``) and a superpoint-level cosine joins it
(``superpoint_weight``); superpoints are ``segment``'s, or every point its own
(``superpoints: none``, SAS outdoors). TESD (Eq. 11-13): from ``tesd_start`` of the
epochs on, an EMA bank of the student's class scores over ``tesd_vocabulary``
gives point and superpoint pseudo labels, whose cross-entropy terms join
(``tesd_mode: add``, paper) or replace (``replace``, SAS code) the teacher terms.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from ovlift.cache_schema import GroupWriter, StageGroup
from ovlift.cache_schema.groups.distill import DISTILL_SPEC, write_student
from ovlift.cache_schema.groups.lifted import FeatureSource, lifted_features
from ovlift.config import FrozenConfig, runtime_field
from ovlift.errors import StageInputError
from ovlift.kernels.classify import classify
from ovlift.models.student_config import StudentConfig
from ovlift.stages.base import Stage, StageContext
from ovlift.vocabularies import Vocabulary, get_vocabulary


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
    """Templates of the class embeddings of the label loss and of TESD."""
    superpoints: Literal["none", "segment"] = "none"
    """SAS's superpoints: ``segment``'s (ScanNet's segmentator, paper and code) or ``none``: each point (nuScenes)."""
    superpoint_targets: bool = False
    """Point target = superpoint mean of the teacher features over points with one (SAS paper Eq. 10 and code)."""
    superpoint_weight: float = Field(0.0, ge=0)
    """Weight of SAS's mean_SP(1 - cos(teacher SP mean, student SP mean)) (paper and code: 1; 0: off)."""
    tesd_start: float | None = Field(None, ge=0, le=1)
    """Fraction of the epochs before TESD starts (paper: 0.7; code: a second run); None or 1: off."""
    tesd_alpha: float = Field(0.9999, ge=0, lt=1)
    """TESD's EMA momentum per scene visit (code: 0.9999, near the switch-time model; paper: no value)."""
    tesd_temperature: float = Field(0.01, gt=0)
    """TESD's logits cos / tau (ours, CLIP's 0.01; code: unnormalised dot products; paper: none)."""
    tesd_vocabulary: str = "scannet20"
    """Classes of TESD's pseudo labels (paper and code: the benchmark's label set; reported in info)."""
    tesd_mode: Literal["add", "replace"] = "add"
    """TESD's CE terms join the teacher losses (``add``, paper) or replace them (``replace``, code)."""
    tesd_point_target: Literal["point", "superpoint"] = "point"
    """Point pseudo label: argmax of its EMA scores (paper Eq. 12) or its superpoint's, broadcast (code)."""
    tesd_bank: Literal["point", "superpoint"] = "point"
    """EMA of class scores per point (paper Eq. 11) or per superpoint (code; needs tesd_point_target superpoint)."""
    tesd_bank_dtype: Literal["float16", "float32"] = "float16"
    """Bank precision (code: float16, whose rounding drops most EMA steps at alpha >= 0.999; float32 to sweep)."""
    seed: int = 0
    """Seeds initialisation, scene order and augmentation."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's."""

    @model_validator(mode="after")
    def _check_tesd(self) -> DistillConfig:
        if self.tesd_bank == "superpoint" and self.tesd_point_target != "superpoint":
            raise ValueError("tesd_bank 'superpoint' keeps no per-point scores: set tesd_point_target 'superpoint'")
        return self

    def tesd_start_epoch(self) -> int | None:
        """First epoch (0-based) with TESD: round(tesd_start x epochs); None when that is no epoch."""
        if self.tesd_start is None:
            return None
        start = math.floor(self.tesd_start * self.epochs + 0.5)
        return start if start < self.epochs else None


class DistillStage(Stage[DistillConfig]):
    implementation = "openscene"
    version = "2"  # 2: losses regrouped per voxel (same value, other rounding)
    spec = DISTILL_SPEC
    computes_on_device = True
    memory_gb = 8.0  # every training scene in memory
    reads = ("input", "project")
    optional_reads = ("denoise", "fuse", "segment")
    writes_files = True

    def select_inputs(self, name: str, keys: list[str]) -> list[str]:
        if name == "segment":
            return keys if self.config.superpoints == "segment" else []
        return keys if name in ("input", "project") or self.config.source == name else []

    def check_inputs(self, keys: list[str]) -> None:
        stages = {k.split("/", 1)[0] for k in keys}
        if self.config.source not in stages:
            raise ValueError(f"source '{self.config.source}' needs that stage configured")
        if self.config.superpoints == "segment" and "segment" not in stages:
            raise ValueError("superpoints 'segment' needs the segment stage configured (or superpoints: none)")

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        from ovlift.models.training import (
            Augment,
            ClassText,
            Losses,
            SceneData,
            Schedule,
            Tesd,
            superpoint_targets,
            train,
            write_log,
        )

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
                    superpoints=scene_superpoints(groups["segment"], len(lifted.seen), f"scene '{scene_id}'")
                    if cfg.superpoints == "segment"
                    else None,
                )
            )
        if not scenes:
            raise StageInputError(f"{ctx.where()}: split '{cfg.split}' has no scenes to train on")
        if cfg.student.use_color and any(s.colors is None for s in scenes):
            raise StageInputError(f"{ctx.where()}: student.use_color needs point colours, which some scenes lack")
        if cfg.superpoint_targets:  # the label loss below classifies these targets too
            for s in scenes:
                if s.superpoints is not None:
                    sp = superpoint_targets(s)
                    s.targets = torch.zeros_like(s.targets)
                    s.targets[s.seen] = sp.targets[sp.point_superpoint].to(s.targets.dtype)

        def class_text(name: str) -> tuple[ClassText, Vocabulary]:
            vocab = get_vocabulary(name)
            assert ctx.text is not None and text_encoder is not None
            return ClassText.embed(vocab, ctx.text, text_encoder, cfg.templates), vocab

        text = None
        if cfg.label_weight > 0:
            text = class_text(cfg.vocabulary)[0]
            for s in scenes:
                s.labels = classify(s.targets, text.prompts, text.prompt_class)[1]
        tesd, tesd_info, start = None, None, cfg.tesd_start_epoch()
        if start is not None:
            tesd_text, tesd_vocab = class_text(cfg.tesd_vocabulary)
            tesd = Tesd(
                start,
                tesd_text,
                cfg.tesd_alpha,
                cfg.tesd_temperature,
                cfg.tesd_mode == "replace",
                cfg.tesd_point_target,
                cfg.tesd_bank,
                getattr(torch, cfg.tesd_bank_dtype),
            )
            tesd_info = {"vocabulary": tesd_vocab.key, "classes": list(tesd_vocab.classes), "start_epoch": start}
        channels = int(scenes[0].targets.shape[1])
        assert ctx.files is not None
        model, rows = train(
            scenes,
            cfg.student,
            channels,
            Schedule(cfg.optimizer, cfg.lr, cfg.final_lr, cfg.schedule, cfg.weight_decay),
            Augment(cfg.rotate_z, cfg.flip, cfg.scale),
            Losses(cfg.cosine_weight, cfg.label_weight, cfg.label_temperature, cfg.superpoint_weight),
            cfg.epochs,
            cfg.batch_size,
            cfg.seed,
            device,
            ctx.files,
            text,
            tesd,
        )
        write_log(rows, ctx.files)
        write_student(out, model.state_dict(), rows)
        out.set_info(
            teacher=teacher,
            source=cfg.source,
            channels=channels,
            text_encoder=text_encoder,
            student=cfg.student.normalised(),
            train_scenes=[s.scene_id for s in scenes],
            checkpoints=ctx.files_url,
            superpoints=cfg.superpoints,
            tesd=tesd_info,
        )


def scene_superpoints(segment: StageGroup, num_points: int, where: str) -> torch.Tensor:
    """(N,) int64 superpoints numbered 0..S-1; a point in none (-1) becomes a superpoint of its own."""
    ids = torch.from_numpy(segment.load("superpoints").astype(np.int64))
    if len(ids) != num_points:
        raise StageInputError(f"{where}: array 'superpoints' has {len(ids)} points, the teacher features {num_points}")
    none = ids < 0
    ids[none] = (int(ids.max()) + 1 if len(ids) else 0) + torch.arange(int(none.sum()))
    return torch.unique(ids, return_inverse=True)[1]
