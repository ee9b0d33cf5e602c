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
from functools import partial
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator

from ovlift.cache_schema import GroupWriter
from ovlift.cache_schema.groups.distill import DISTILL_SPEC, write_student
from ovlift.cache_schema.groups.lifted import FeatureSource, TrainingScene, TrainingScenes
from ovlift.errors import StageInputError
from ovlift.kernels.classify import classify
from ovlift.models.training_config import TrainingConfig
from ovlift.models.validation import Validation
from ovlift.stages.base import Stage, StageContext
from ovlift.vocabularies import get_vocabulary

if TYPE_CHECKING:  # the training loop imports spconv, which takes seconds: imported when run
    from ovlift.models.scene_stream import MappedScenes
    from ovlift.models.training import ClassText, SceneData, Tesd


class DistillConfig(TrainingConfig):
    """OpenScene's cosine distillation, with CUS3D's label loss and SAS's objectives as options."""

    source: FeatureSource = "project"
    """Teacher features to distil: ``project`` (fused, OpenScene), ``denoise`` (CUS3D) or ``fuse`` (SAS)."""
    cosine_weight: float = Field(1.0, ge=0)
    """Weight of the cosine feature loss (1 - cos)."""
    label_weight: float = Field(0.0, ge=0)
    """Weight of CUS3D's label loss (student vs teacher classification over the vocabulary)."""
    label_temperature: float = Field(0.01, gt=0)
    """Temperature tau of the label loss's logits cos / tau (CUS3D: 0.01)."""
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
    version = "3"  # 2: losses regrouped per voxel (same value, other rounding); 3: epoch_val_loss
    spec = DISTILL_SPEC
    computes_on_device = True
    memory_gb = 8.0  # a step's scenes (and prefetch_steps more), the student and its activations: not the split
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
        from ovlift.models.training import Losses, TrainRun, train, write_log

        cfg = self.config
        superpoints = cfg.superpoints == "segment"
        stored = TrainingScenes(ctx.scene_inputs, cfg.source, cfg.teacher, superpoints, ctx.where(), cfg.split)
        text = self._class_text(ctx, cfg.vocabulary, stored.text_encoder) if cfg.label_weight > 0 else None
        scenes = self._scene_data(stored, ctx, text)
        validation = self._validation(ctx, superpoints, text)
        tesd, tesd_info = self._tesd(ctx, stored.text_encoder)
        run = TrainRun(
            cfg.student,
            stored.channels,
            cfg.optimisation(),
            cfg.augmentation(),
            Losses(cfg.cosine_weight, cfg.label_weight, cfg.label_temperature, cfg.superpoint_weight),
            cfg.epochs,
            cfg.batch_size,
            cfg.seed,
            text,
            tesd,
            cfg.prefetch_steps,
        )
        assert ctx.files is not None
        model, rows = train(scenes, run, torch.device(cfg.device or ctx.device), ctx.files, validation)
        write_log(rows, ctx.files)
        write_student(out, model.state_dict(), rows)
        out.set_info(
            teacher=stored.teacher,
            source=cfg.source,
            channels=stored.channels,
            text_encoder=stored.text_encoder,
            student=cfg.student.normalised(),
            train_scenes=stored.scene_ids,
            checkpoints=ctx.files_url,
            superpoints=cfg.superpoints,
            tesd=tesd_info,
            validation=validation[1].info() if validation else None,
        )

    def _validation(
        self, ctx: StageContext, superpoints: bool, text: ClassText | None
    ) -> tuple[MappedScenes[TrainingScene, SceneData], Validation] | None:
        """The validation scenes, prepared as the training scenes are, and their record (None: no val_split)."""
        cfg = self.config
        if cfg.val_split is None:
            return None
        held_out = TrainingScenes(
            ctx.validation_inputs, cfg.source, cfg.teacher, superpoints, ctx.where(), cfg.val_split
        )
        record = Validation(cfg.val_split, list(ctx.validation_inputs), cfg.patience)
        return self._scene_data(held_out, ctx, text), record

    def _scene_data(
        self, stored: TrainingScenes, ctx: StageContext, text: ClassText | None
    ) -> MappedScenes[TrainingScene, SceneData]:
        """The scenes as the training loop takes them, each read when the loop asks for it."""
        from ovlift.models.scene_stream import MappedScenes

        if self.config.student.use_color and not stored.have_colors():
            raise StageInputError(f"{ctx.where()}: student.use_color needs point colours, which some scenes lack")
        return MappedScenes(stored, partial(self._prepared, text=text))

    def _prepared(self, loaded: TrainingScene, text: ClassText | None) -> SceneData:
        """One scene as the training loop takes it; with ``superpoint_targets`` each point's target is
        its superpoint's mean teacher feature, and with ``text`` (the label loss) its class is that of
        its target."""
        from ovlift.models.training import SceneData, superpoint_targets

        s = SceneData(
            scene_id=loaded.scene_id,
            points=torch.from_numpy(loaded.points),
            colors=None if loaded.colors is None else torch.from_numpy(loaded.colors),
            targets=torch.from_numpy(loaded.lifted.features),
            seen=torch.from_numpy(loaded.lifted.seen),
            superpoints=None if loaded.superpoints is None else torch.from_numpy(loaded.superpoints),
        )
        if self.config.superpoint_targets and s.superpoints is not None:
            sp = superpoint_targets(s)
            s.targets = torch.zeros_like(s.targets)
            s.targets[s.seen] = sp.targets[sp.point_superpoint].to(s.targets.dtype)
        if text is not None:
            s.labels = classify(s.targets, text.prompts, text.prompt_class)[1]
        return s

    def _class_text(self, ctx: StageContext, vocabulary: str, text_encoder: dict) -> ClassText:
        from ovlift.models.training import ClassText

        assert ctx.text is not None
        return ClassText.embed(get_vocabulary(vocabulary), ctx.text, text_encoder, self.config.templates)

    def _tesd(self, ctx: StageContext, text_encoder: dict) -> tuple[Tesd | None, dict | None]:
        """SAS's TESD as configured, and what the group's info records of it (None, None: off)."""
        from ovlift.models.training import Tesd

        cfg, start = self.config, self.config.tesd_start_epoch()
        if start is None:
            return None, None
        vocab = get_vocabulary(cfg.tesd_vocabulary)
        tesd = Tesd(
            start,
            self._class_text(ctx, cfg.tesd_vocabulary, text_encoder),
            cfg.tesd_alpha,
            cfg.tesd_temperature,
            cfg.tesd_mode == "replace",
            cfg.tesd_point_target,
            cfg.tesd_bank,
            getattr(torch, cfg.tesd_bank_dtype),
        )
        return tesd, {"vocabulary": vocab.key, "classes": list(vocab.classes), "start_epoch": start}
