"""``fuse``: SAS's capability-weighted fusion of several teachers, per scene.

Reads each teacher's features fused over the views by ``project`` and, for the
``capability`` method without an inline table, the global ``capability`` group;
labels every teacher's feature by cosine to the vocabulary and weighs the
teachers per point (see ``ovlift.kernels.teacher_fusion`` for the rules). The
teachers must live in one text space (SAS puts SEEM into CLIP's by captions).
Writes the fused features, the weights and the winning teacher of each point;
``distill`` and ``predict`` read the fused set with ``source: fuse``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from ovlift.cache_schema import GroupWriter, StageGroup
from ovlift.cache_schema.groups.capability import CAPABILITY_SPEC
from ovlift.cache_schema.groups.fuse import FUSE_SPEC
from ovlift.cache_schema.groups.project import fused_features
from ovlift.config import FrozenConfig, runtime_field
from ovlift.errors import StageInputError
from ovlift.kernels.teacher_fusion import (
    Normalise,
    add_weights,
    capability_weights,
    fuse_teachers,
    linear_weights,
    teacher_predictions,
)
from ovlift.models.text import TextEncoderConfig, text_space
from ovlift.progress import progress
from ovlift.stages.base import Stage, StageContext
from ovlift.vocabularies import Vocabulary, get_vocabulary


class FuseConfig(FrozenConfig):
    teachers: tuple[str, ...] | None = None
    """extract2d teachers to fuse, in weight-column order; the first is the one ``other_class``
    keeps (SAS: LSeg, then SEEM). None: every teacher ``project`` fused, in its order."""
    source: Literal["project"] = "project"
    """Per-teacher features: ``project``'s view-fused ones (SAS fuses OpenScene-fused features).
    ``denoise`` holds a single teacher, so it cannot be fused."""
    method: Literal["capability", "add", "linear"] = "capability"
    """capability: SAS (paper and code); add and linear: the baselines of SAS's Tab. 3."""
    normalise: Normalise = "sum"
    """Teacher scores before the softmax: sum (code: divided by their sum) or half (paper
    Eq. 7: divided by 2 for two teachers; here by the number of teachers that see the point)."""
    temperature: float = Field(0.05, gt=0)
    """Softmax temperature tau over the teachers (code: 0.05; the paper gives none)."""
    capability: dict[str, dict[str, float]] | None = None
    """Inline capability, teacher -> class -> value in [0, 1] (unlisted classes 0), for controlled
    studies; None: the global ``capability`` stage's table (SAS: measured on generated images)."""
    vocabulary: str = "sas-scannet21"
    """Classes each teacher's prediction is taken over; the capability's classes (SAS: ScanNet-20
    order with 'other' at 19, then ceiling)."""
    templates: Literal["single", "ensemble"] = "single"
    """Prompt templates of the class embeddings (SAS: "a {} in a scene")."""
    other_class: str | None = "other"
    """Class where the first teacher keeps its own feature (code: LSeg's 'other'; not in the
    paper); None: no such class. Capability method only."""
    points_per_batch: int = runtime_field(1 << 15, ge=1)
    """Points fused at once; bounds memory, does not change results."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's."""

    @field_validator("source", mode="before")
    @classmethod
    def _one_teacher_sources(cls, value: Any) -> Any:
        if value == "denoise":
            raise ValueError(
                "denoise holds one teacher's features (CUS3D's filter), nothing to fuse; use source: project"
            )
        return value

    @field_validator("capability")
    @classmethod
    def _values_in_unit_range(cls, value: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]] | None:
        for teacher, row in (value or {}).items():
            bad = {c: v for c, v in row.items() if not 0 <= v <= 1}
            if bad:
                raise ValueError(f"capability[{teacher!r}]: values must lie in [0, 1], found {bad}")
        return value

    @property
    def reads_capability_group(self) -> bool:
        return self.method == "capability" and self.capability is None


class FuseStage(Stage[FuseConfig]):
    """Capability-weighted fusion of N teachers (SAS Sec. 3.3), or a Tab. 3 baseline."""

    implementation = "sas"
    version = "1"
    computes_on_device = True
    spec = FUSE_SPEC
    reads = ("project",)
    optional_reads = ("capability",)  # the global table, unless inline or not needed

    def select_inputs(self, name: str, keys: list[str]) -> list[str]:
        if name == "capability" and not self.config.reads_capability_group:
            return []
        return keys

    def check_inputs(self, keys: list[str]) -> None:
        if self.config.reads_capability_group and "capability" not in keys:
            raise ValueError(
                "method 'capability' needs the global 'capability' stage configured, or an inline capability table"
            )

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        cfg = self.config
        device = torch.device(cfg.device or ctx.device)
        project = ctx.inputs["project"]
        names = self.teachers(project, ctx.where())
        text_encoder = shared_text_encoder(project, names, ctx.where())
        vocab = get_vocabulary(cfg.vocabulary)
        prompts = ctx.text(TextEncoderConfig(**{**text_encoder, "templates": cfg.templates}), list(vocab.prompts))
        capability, capability_source = self._capability(ctx, names, vocab, text_encoder)
        features = [fused_features(project, n) for n in names]
        seen = np.stack([project.load(f"fused/{n}/seen") for n in names])
        channels = {n: f.shape[1] for n, f in zip(names, features)}
        if len(set(channels.values())) > 1:
            raise StageInputError(f"{ctx.where()}: teachers have different feature channels {channels}; cannot fuse")
        other = other_class_index(cfg.other_class, vocab, ctx.where()) if cfg.method == "capability" else None
        weigh = Weighing(
            cfg, prompts.to(device), torch.tensor(vocab.prompt_class, device=device), capability, other, device
        )
        fused, any_seen, weights, winner = self._fuse(ctx, features, seen, weigh, device)
        out.write("features", fused)
        out.write("seen", any_seen)
        out.write("weights", weights)
        out.write("winner", winner)
        out.set_info(
            teacher="fused:" + "+".join(names),
            teachers=names,
            text_encoder=text_encoder,
            classes=list(vocab.classes),
            method=cfg.method,
            capability=None if capability is None else capability.tolist(),
            capability_source=capability_source,
        )

    def _capability(
        self, ctx: StageContext, names: list[str], vocab: Vocabulary, text_encoder: dict
    ) -> tuple[np.ndarray | None, str | None]:
        """The (teachers, classes) capability table and where it came from (None: not weighted by one)."""
        if self.config.method != "capability":
            return None, None
        if self.config.capability is not None:
            return inline_capability(self.config.capability, names, vocab, ctx.where()), "inline"
        group = ctx.inputs["capability"]
        return group_capability(group, names, vocab, text_encoder, ctx.where()), CAPABILITY_SPEC.path()

    def _fuse(
        self, ctx: StageContext, features: list[np.ndarray], seen: np.ndarray, weigh: Weighing, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per point the fused feature, whether any teacher saw it, each teacher's weight and the winner."""
        count = seen.shape[1]
        fused = np.zeros((count, features[0].shape[1]), np.float16)
        any_seen = np.zeros(count, bool)
        weights = np.zeros((count, len(features)), np.float16)
        winner = np.full(count, -1, np.int8)
        step = self.config.points_per_batch
        for start in progress(range(0, count, step), f"{ctx.scene_id}: fuse", unit="batch"):
            rows = slice(start, start + step)
            f = torch.stack([torch.from_numpy(x[rows]) for x in features]).to(device)
            s = torch.from_numpy(seen[:, rows]).to(device)
            w = weigh(f, s)
            f, s, win = fuse_teachers(f, s, w)
            fused[rows], any_seen[rows] = f.to(torch.float16).cpu().numpy(), s.cpu().numpy()
            weights[rows], winner[rows] = w.to(torch.float16).cpu().numpy(), win.to(torch.int8).cpu().numpy()
        return fused, any_seen, weights, winner

    def teachers(self, project: StageGroup, where: str) -> list[str]:
        """The teachers to fuse, each one that project fused."""
        fused = list(project.info.get("teachers", {}))
        names = list(self.config.teachers) if self.config.teachers is not None else fused
        missing = [n for n in names if n not in fused]
        if missing:
            raise StageInputError(
                f"{where}: fuse reads teachers {missing}, which project did not fuse (it has {fused})"
            )
        if len(set(names)) != len(names) or len(names) < 2:
            raise StageInputError(f"{where}: fuse needs at least two distinct teachers, got {names}")
        return names


def shared_text_encoder(project: StageGroup, names: list[str], where: str) -> dict:
    """The text encoder all the teachers' features live in (templates aside), else an error."""
    encoders = {n: project.info["teachers"][n]["text_encoder"] for n in names}
    first = names[0]
    for name in names[1:]:
        if text_space(encoders[name]) != text_space(encoders[first]):
            raise StageInputError(
                f"{where}: teachers live in different text spaces: '{first}' in {encoders[first]}, "
                f"'{name}' in {encoders[name]}; fuse needs one (SAS maps every teacher into CLIP's)"
            )
    return encoders[first]


def inline_capability(
    table: dict[str, dict[str, float]], names: list[str], vocab: Vocabulary, where: str
) -> np.ndarray:
    """(T, K) float32 from the config's teacher -> class -> value (unlisted classes 0)."""
    missing = [n for n in names if n not in table]
    if missing:
        raise StageInputError(
            f"{where}: the inline capability has no row for teachers {missing} (it has {list(table)})"
        )
    result = np.zeros((len(names), len(vocab.classes)), np.float32)
    for row, name in enumerate(names):
        unknown = sorted(set(table[name]) - set(vocab.classes))
        if unknown:
            raise StageInputError(
                f"{where}: inline capability of '{name}' names classes {unknown}, which vocabulary "
                f"'{vocab.name}' does not have ({list(vocab.classes)})"
            )
        for cls, value in table[name].items():
            result[row, vocab.index(cls)] = value
    return result


def group_capability(
    group: StageGroup, names: list[str], vocab: Vocabulary, text_encoder: dict, where: str
) -> np.ndarray:
    """(T, K) float32: the rows of the fused teachers in the global capability table."""
    info = group.info
    if list(info["classes"]) != list(vocab.classes):
        raise StageInputError(
            f"{where}: the capability's classes {list(info['classes'])} (vocabulary '{info.get('vocabulary')}') "
            f"are not fuse's vocabulary '{vocab.name}' {list(vocab.classes)}; set fuse's vocabulary to the capability's"
        )
    rows = list(info["teachers"])
    missing = [n for n in names if n not in rows]
    if missing:
        raise StageInputError(f"{where}: the capability has no row for teachers {missing} (it has {rows})")
    encoder = info.get("text_encoder")
    if encoder is not None and text_space(encoder) != text_space(text_encoder):
        raise StageInputError(
            f"{where}: the capability was measured in text space {encoder}, the teachers live in {text_encoder}"
        )
    table = group.load("capability")
    return np.ascontiguousarray(table[[rows.index(n) for n in names]], dtype=np.float32)


def other_class_index(other_class: str | None, vocab: Vocabulary, where: str) -> int | None:
    if other_class is None:
        return None
    if other_class not in vocab.classes:
        raise StageInputError(
            f"{where}: other_class '{other_class}' is not in vocabulary '{vocab.name}' {list(vocab.classes)}; "
            "set other_class: null if it has no such class"
        )
    return vocab.index(other_class)


class Weighing:
    """Each teacher's weight per point, by the configured method."""

    def __init__(
        self,
        config: FuseConfig,
        prompts: torch.Tensor,
        prompt_class: torch.Tensor,
        capability: np.ndarray | None,
        other: int | None,
        device: torch.device,
    ) -> None:
        self.config, self.prompts, self.prompt_class, self.other = config, prompts, prompt_class, other
        self.table = None if capability is None else torch.from_numpy(capability).to(device)

    def __call__(self, features: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """(T, P) weights of the (T, P, C) ``features`` where ``seen`` (T, P)."""
        cfg = self.config
        if cfg.method == "add":
            return add_weights(seen)
        similarity, classes = teacher_predictions(features, self.prompts, self.prompt_class)
        if cfg.method == "linear":
            return linear_weights(similarity, seen)
        return capability_weights(classes, seen, self.table, cfg.temperature, cfg.normalise, self.other)
