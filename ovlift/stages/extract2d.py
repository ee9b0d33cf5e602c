"""``extract2d/<teacher>``: per-pixel features of a 2D teacher, one variant per teacher.

Frames stream from the ``input`` group in batches through the teacher (CPU or
CUDA) and are stored in the teacher's encoding:

* ``dense``: ``features`` (T, h, w, C) float16, one frame per chunk;
* ``masks``: ``mask_ids`` and ``mask_weights`` (T, h, w, K) per pixel, and
  ``mask_embeddings`` (Q, C); a pixel's feature is sum_k weight_k * embedding[id_k].

``project`` reads either through ``teacher_features`` and fuses them per point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

from ovlift.cache_schema import ArraySpec, GroupSpec, GroupWriter, StageGroup
from ovlift.kernels.fusion import DenseFeatures, MaskFeatures
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput
from ovlift.models.teachers.cached import CachedConfig, CachedTeacher, frame_file
from ovlift.models.teachers.caption_aligned import CaptionAlignedConfig, CaptionAlignedTeacher
from ovlift.models.teachers.mask_clip import MaskClipCropConfig, MaskClipCropTeacher
from ovlift.models.teachers.maskclip import MaskCLIPConfig, MaskCLIPTeacher
from ovlift.models.teachers.synthetic import SyntheticConfig, SyntheticTeacher
from ovlift.progress import progress
from ovlift.stages.base import Stage, StageContext

EXTRACT2D_SPEC = GroupSpec(
    stage="extract2d",
    doc="A 2D teacher's per-pixel features of the scene's frames, in its storage encoding.",
    variant="teacher",
    arrays=(
        ArraySpec("frames", "int32", ("T",), (None,), "input frame index of each extracted frame"),
        ArraySpec(
            "features",
            "float16",
            ("T", "h", "w", "C"),
            (1, None, None, None),
            "dense encoding: per-pixel features",
            required=False,
        ),
        ArraySpec(
            "mask_ids",
            "int32",
            ("T", "h", "w", "K"),
            (1, None, None, None),
            "masks encoding: ids into mask_embeddings of each pixel's top-k masks, -1 = none",
            required=False,
        ),
        ArraySpec(
            "mask_weights",
            "float16",
            ("T", "h", "w", "K"),
            (1, None, None, None),
            "masks encoding: weight of each of those masks",
            required=False,
        ),
        ArraySpec(
            "mask_embeddings",
            "float16",
            ("Q", "C"),
            (4096, None),
            "masks encoding: one feature per mask",
            required=False,
        ),
    ),
    info={
        "teacher": "implementation that produced it",
        "encoding": "dense or masks",
        "feature_size": "[rows, cols] of the feature maps",
        "channels": "feature channels C",
        "text_encoder": "config of the text encoder whose space the features live in (to embed queries)",
    },
)


class Extract2DStage(Stage[TeacherConfig]):
    """The frame loop shared by every teacher; subclasses name the teacher."""

    name = "extract2d"
    spec = EXTRACT2D_SPEC
    reads = ("input",)
    has_variants = True
    teacher_class: type[Teacher]

    def __init__(self, config: TeacherConfig, variant: str | None = None) -> None:
        super().__init__(config, variant)
        if config.encoding == "masks" and not self.teacher_class.produces_masks:
            raise ValueError(
                f"teacher '{self.implementation}' produces dense features; encoding 'masks' needs a mask-based teacher"
            )

    def load_teacher(self, ctx: StageContext) -> Teacher:
        """The teacher's model, loaded once per (teacher, config, device) per process."""
        device = torch.device(self.config.device or ctx.device)
        key = (self.teacher_class, self.config.model_dump_json(), str(device))
        if key not in _TEACHERS:
            if len(_TEACHERS) >= 4:
                _TEACHERS.pop(next(iter(_TEACHERS)))
            _TEACHERS[key] = self.teacher_class(self.config, device, ctx.text, f"teacher '{self.variant}'")
        teacher = _TEACHERS[key]
        teacher.text = ctx.text  # embeddings are cached in this run's store
        return teacher

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        scene = ctx.inputs["input"]
        teacher = self.load_teacher(ctx)
        cfg = self.config
        hw = (cfg.feature_height, cfg.feature_width)
        frames = np.arange(0, scene.dims["T"], cfg.frame_stride, dtype=np.int32)
        names = scene.info.get("class_names")
        optional = {
            key: scene.array(f"frames/{key}") for key in ("depth", "labels", "instances") if f"frames/{key}" in scene
        }
        if cfg.encoding == "dense":
            features = out.create("features", (len(frames), *hw, teacher.dim))
        else:
            ids_out = out.create("mask_ids", (len(frames), *hw, cfg.top_k))
            weights_out = out.create("mask_weights", (len(frames), *hw, cfg.top_k))
            embeddings: list[torch.Tensor] = []
            offset = 0
        batch = cfg.frames_per_batch
        for start in progress(range(0, len(frames), batch), f"{ctx.scene_id}: {self.variant}", unit="batch"):
            sel = frames[start : start + batch]
            extra = {key: torch.from_numpy(array.oindex[sel]) for key, array in optional.items()}
            result = teacher(
                TeacherInput(
                    scene_id=ctx.scene_id,
                    frame_index=sel,
                    color=torch.from_numpy(scene.array("frames/color").oindex[sel]),
                    feature_hw=hw,
                    class_names=tuple(names) if names else None,
                    frame_names=tuple(scene.info["frame_names"][i] for i in sel),
                    **extra,
                )
            )
            stop = start + len(sel)
            if cfg.encoding == "dense":
                dense = result.images if isinstance(result, DenseFeatures) else result.decode()
                features[start:stop] = dense.to(torch.float16).cpu().numpy()
            else:
                assert isinstance(result, MaskFeatures)
                ids, weights = _pad_k(result.ids, result.weights, cfg.top_k)
                ids_out[start:stop] = torch.where(ids >= 0, ids + offset, -1).cpu().numpy()
                weights_out[start:stop] = weights.to(torch.float16).cpu().numpy()
                embeddings.append(result.embeddings.to(torch.float16).cpu())
                offset += len(result.embeddings)
        if cfg.encoding == "masks":
            stacked = torch.cat(embeddings) if embeddings else torch.zeros(0, teacher.dim, dtype=torch.float16)
            out.write("mask_embeddings", stacked.numpy())
        out.write("frames", frames)
        out.set_info(
            teacher=self.implementation,
            encoding=cfg.encoding,
            feature_size=list(hw),
            channels=teacher.dim,
            text_encoder=teacher.text_encoder.normalised(),
        )


def _pad_k(ids: torch.Tensor, weights: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks per pixel to exactly k: extra slots are empty (-1), surplus ones dropped by weight."""
    have = ids.shape[-1]
    if have < k:
        pad = (0, k - have)
        return torch.nn.functional.pad(ids, pad, value=-1), torch.nn.functional.pad(weights, pad, value=0)
    if have > k:
        w = torch.where(ids >= 0, weights.float(), -1.0)
        top = w.topk(k, dim=-1).indices
        ids, weights = ids.gather(-1, top), weights.gather(-1, top)
        total = (weights.float() * (ids >= 0)).sum(-1, keepdim=True).clamp(min=1e-12)
        weights = (weights.float() * (ids >= 0) / total).to(weights.dtype)
    return ids, weights


_TEACHERS: dict[tuple, Teacher] = {}


class TeacherFeatures:
    """Reads a teacher's stored features for some frames, whatever the encoding."""

    def __init__(self, group: StageGroup) -> None:
        self.group = group
        self.encoding = group.info["encoding"]
        self.frames = group.load("frames")
        self.channels = int(group.info["channels"])
        self.feature_hw = tuple(group.info["feature_size"])
        self._local = {int(f): i for i, f in enumerate(self.frames)}
        self._embeddings = torch.from_numpy(group.load("mask_embeddings")) if self.encoding == "masks" else None

    def positions(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For input frame indices, (positions among them that this teacher has, its local indices)."""
        pos = [(p, self._local[int(f)]) for p, f in enumerate(frames) if int(f) in self._local]
        return np.array([p for p, _ in pos], dtype=np.int64), np.array([i for _, i in pos], dtype=np.int64)

    def read(self, local: np.ndarray, device: torch.device | str = "cpu") -> DenseFeatures | MaskFeatures:
        if self.encoding == "dense":
            return DenseFeatures(torch.from_numpy(self.group.array("features").oindex[local]).to(device))
        ids = torch.from_numpy(self.group.array("mask_ids").oindex[local]).to(device)
        weights = torch.from_numpy(self.group.array("mask_weights").oindex[local]).to(device)
        return MaskFeatures(ids, weights, self._embeddings.to(device))


def teachers_in(inputs: Mapping[str, StageGroup]) -> dict[str, StageGroup]:
    """The extract2d groups among a stage's inputs, by teacher name."""
    return {key.split("/", 1)[1]: group for key, group in inputs.items() if key.startswith("extract2d/")}


class SyntheticExtract(Extract2DStage):
    """Ground-truth classes of synthetic scenes as text embeddings, with controlled noise."""

    implementation = "synthetic"
    version = "1"
    Config = SyntheticConfig
    teacher_class = SyntheticTeacher


class MaskCLIPExtract(Extract2DStage):
    """Dense CLIP features with MaskCLIP's last-block modification (CLIP2Scene)."""

    implementation = "maskclip"
    version = "1"
    Config = MaskCLIPConfig
    teacher_class = MaskCLIPTeacher


class MaskClipCropExtract(Extract2DStage):
    """Segmenter masks described by CLIP, CUS3D's vote over overlapping masks."""

    implementation = "mask-clip"
    version = "1"
    Config = MaskClipCropConfig
    teacher_class = MaskClipCropTeacher


class CaptionAlignedExtract(Extract2DStage):
    """Segmenter masks as captions in the shared text space (SAS)."""

    implementation = "caption-aligned"
    version = "1"
    Config = CaptionAlignedConfig
    teacher_class = CaptionAlignedTeacher


class CachedExtract(Extract2DStage):
    """Per-frame features computed elsewhere, imported from files."""

    implementation = "cached"
    version = "1"
    Config = CachedConfig
    teacher_class = CachedTeacher

    def external_inputs(self, scene_id: str, inputs: Mapping[str, StageGroup]) -> dict[str, str]:
        names = inputs["input"].info["frame_names"]
        parts = []
        for i in range(0, len(names), self.config.frame_stride):
            path = frame_file(self.config, scene_id, names[i], i)
            parts.append(f"{path.name}:{path.stat().st_size if path.is_file() else 'missing'}")
        return {f"files:{self.config.path}": hashlib.sha256(";".join(parts).encode()).hexdigest()}
