"""``denoise``: CUS3D's 3D filter, a vote over the views of each object.

Re-gathers, for every correspondence ``project`` found, the teacher's feature at
that view (from ``extract2d``), labels it by cosine to the vocabulary and votes
per object (``objects``); see ``ovlift.kernels.denoise`` for the rule. Views are
streamed frame batch by frame batch, twice (vote, then keep), so memory is one
batch of 2D features plus (N, C). Points outside objects keep their fused
feature from ``project``.

``observations: fused`` votes with each point's fused feature as its one observation,
for features imported without their views (``project`` implementation ``released``):
the same object-level rule, a point a view of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
import torch

from ovlift.cache_schema import GroupWriter, StageGroup
from ovlift.cache_schema.groups.denoise import DENOISE_SPEC
from ovlift.cache_schema.groups.extract2d import TeacherFeatures, teachers_in
from ovlift.cache_schema.groups.project import fused_features, fused_teacher
from ovlift.config import FrozenConfig, added_field, runtime_field
from ovlift.errors import StageInputError
from ovlift.kernels.classify import classify
from ovlift.kernels.denoise import ObjectDenoiser
from ovlift.kernels.fusion import FeatureBuffers, pixel_views
from ovlift.models.text import TextEncoderConfig
from ovlift.progress import progress
from ovlift.stages.base import Stage, StageContext, teacher_stages
from ovlift.vocabularies import get_vocabulary


class DenoiseConfig(FrozenConfig):
    teacher: str | None = None
    """extract2d teacher whose views are voted (None: the only one project fused)."""
    vocabulary: str = "scannet20"
    """Classes the views are labelled with (CUS3D: ScanNet's 20)."""
    templates: Literal["single", "ensemble"] = "single"
    """Prompt templates of the class embeddings."""
    observations: Literal["views", "fused"] = added_field("views")
    """What is voted: every (point, view) feature re-read from ``extract2d`` (CUS3D), or each
    point's fused feature once (imported features, which have no views)."""
    frames_per_batch: int = runtime_field(8, ge=1)
    """Frames whose features are read at once; bounds memory, does not change results."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's."""


class DenoiseStage(Stage[DenoiseConfig]):
    """The object-level voting filter of CUS3D (its ODP's 3D part)."""

    implementation = "cus3d"
    version = "1"
    computes_on_device = True
    spec = DENOISE_SPEC
    reads = ("project", "objects")
    optional_reads = ("extract2d",)

    def __init__(self, config: DenoiseConfig, variant: str | None = None) -> None:
        super().__init__(config, variant)
        self.teacher_stages: dict[str, Stage] = {}
        """The plan's extract2d stages by variant: they read their groups (``features``)."""

    def bind(self, stages: Mapping[str, Stage]) -> None:
        self.teacher_stages = teacher_stages(stages)

    def select_inputs(self, name: str, keys: list[str]) -> list[str]:
        if name != "extract2d" or (self.config.teacher is None and self.config.observations == "views"):
            return keys
        if self.config.observations == "fused":
            return []
        return [k for k in keys if k.split("/", 1)[1] == self.config.teacher]

    def check_inputs(self, keys: list[str]) -> None:
        if self.config.observations == "views" and not any(k.startswith("extract2d/") for k in keys):
            raise ValueError(f"needs the extract2d teacher '{self.config.teacher or '(any)'}' configured")

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        cfg = self.config
        device = torch.device(cfg.device or ctx.device)
        project, objects_group = ctx.inputs["project"], ctx.inputs["objects"]
        name = fused_teacher(project, cfg.teacher, ctx.where())
        text_encoder = project.info["teachers"][name]["text_encoder"]
        vocab = get_vocabulary(cfg.vocabulary)
        prompts = ctx.text(TextEncoderConfig(**{**text_encoder, "templates": cfg.templates}), list(vocab.prompts))
        prompts, prompt_class = prompts.to(device), torch.tensor(vocab.prompt_class, device=device)

        objects = torch.from_numpy(objects_group.load("objects")).to(device)
        fused = torch.from_numpy(fused_features(project, name)).to(device)
        fused_seen = torch.from_numpy(project.load(f"fused/{name}/seen")).to(device)
        if len(objects) != len(fused):
            raise StageInputError(
                f"{ctx.where()}: array 'objects' has {len(objects)} points, project's features {len(fused)}"
            )
        views = FusedViews(fused, fused_seen) if cfg.observations == "fused" else self._views(ctx, name, device)
        denoiser = ObjectDenoiser(objects, len(vocab.classes), fused.shape[1])
        labels = torch.full((views.count,), -1, dtype=torch.int16, device=device)
        for rows, point_index, features in views.chunks(f"{ctx.scene_id}: denoise (vote)"):
            labels[rows] = classify(features, prompts, prompt_class)[1].to(torch.int16)
            denoiser.vote(point_index, labels[rows].to(torch.int64))
        filtered = 0
        for rows, point_index, features in views.chunks(f"{ctx.scene_id}: denoise (keep)"):
            agree = denoiser.agrees(point_index, labels[rows].to(torch.int64))
            filtered += int((~agree & (objects[point_index] >= 0)).sum())
            denoiser.keep(point_index[agree], features[agree])
        features, has, kept = denoiser.result()
        inside = objects >= 0
        features = torch.where(inside[:, None], features, fused.to(torch.float64))
        seen = torch.where(inside, has, fused_seen)
        label, share, votes = denoiser.object_labels()

        out.write("features", features.to(torch.float16).cpu().numpy())
        out.write("seen", seen.cpu().numpy())
        out.write("kept_views", kept.to(torch.int32).cpu().numpy())
        out.write("object_label", label.to(torch.int16).cpu().numpy())
        out.write("object_vote_share", share.to(torch.float32).cpu().numpy())
        out.write("object_votes", votes.to(torch.int32).cpu().numpy())
        out.set_info(teacher=name, text_encoder=text_encoder, classes=list(vocab.classes), filtered_views=filtered)

    def _views(self, ctx: StageContext, name: str, device: torch.device) -> SceneViews:
        """Every (point, view) correspondence of ``project`` with teacher ``name``'s feature there."""
        groups = teachers_in(ctx.inputs)
        if name not in groups:
            raise StageInputError(f"{ctx.where()}: denoise reads teacher '{name}', which is not among {sorted(groups)}")
        teacher = self.teacher_stages[name].features(groups[name], ctx)
        return SceneViews(ctx.inputs["project"], teacher, self.config.frames_per_batch, device)


class FusedViews:
    """Each seen point's fused feature as its one observation, in chunks of points."""

    def __init__(self, fused: torch.Tensor, seen: torch.Tensor, chunk: int = 1 << 16) -> None:
        self.fused, self.points, self.chunk = fused, seen.nonzero()[:, 0], chunk
        self.count = len(self.points)

    def chunks(self, what: str) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for start in progress(range(0, self.count, self.chunk), what, unit="chunk"):
            rows = torch.arange(start, min(start + self.chunk, self.count), device=self.points.device)
            yield rows, self.points[rows], self.fused[self.points[rows]].float()


class SceneViews:
    """A scene's (point, view) correspondences with a teacher feature, read frame batch
    by frame batch (each batch of 2D features is read once per pass)."""

    def __init__(
        self, project: StageGroup, teacher: TeacherFeatures, frames_per_batch: int, device: torch.device
    ) -> None:
        self.teacher, self.device, self.batch = teacher, device, frames_per_batch
        frame = project.load("frame_index")
        self.order = np.argsort(frame, kind="stable")
        self.sorted_frames = frame[self.order]
        self.point_index = torch.from_numpy(project.load("point_index")).to(device, torch.int64)
        self.pixel = torch.from_numpy(project.load("pixel")).to(device, torch.int64)
        self.count = len(frame)
        frames = np.unique(self.sorted_frames)
        self.frames = frames[teacher.positions(frames)[0]]  # those the teacher has features for
        self._buffers = FeatureBuffers(teacher.channels, 4096 if device.type == "cpu" else 1 << 18, device)

    def chunks(self, what: str) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(rows, point_index, features): indices into the correspondences, their points
        and (n, C) float32 features (a reused buffer), for views with a feature."""
        for start in progress(range(0, len(self.frames), self.batch), what, unit="batch"):
            batch = self.frames[start : start + self.batch]
            lo = np.searchsorted(self.sorted_frames, batch[0], side="left")
            hi = np.searchsorted(self.sorted_frames, batch[-1], side="right")
            position = np.searchsorted(batch, self.sorted_frames[lo:hi])
            has = batch[np.minimum(position, len(batch) - 1)] == self.sorted_frames[lo:hi]
            rows = torch.from_numpy(self.order[lo:hi][has]).to(self.device, torch.int64)
            source = self.teacher.read(self.teacher.positions(batch)[1], self.device)
            frame = torch.from_numpy(position[has]).to(self.device)
            point_index, pixel = self.point_index[rows], self.pixel[rows]
            for selection, features in pixel_views(source, frame, pixel, self._buffers):
                yield rows[selection], point_index[selection], features
