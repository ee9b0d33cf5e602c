"""``extract2d/<teacher>``: per-pixel features of a 2D teacher, one variant per teacher.

Frames stream from the ``input`` group in batches through the teacher (CPU or
CUDA) and are stored in the teacher's encoding (``ovlift.cache_schema.groups.extract2d``).
Which teacher runs is the plan's ``implementation``, looked up in
``ovlift.models.teachers.registry``; this one stage class serves every teacher.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ovlift.cache_schema import GroupWriter, StageGroup
from ovlift.cache_schema.groups.extract2d import EXTRACT2D_SPEC
from ovlift.cache_schema.groups.frames import FrameImages
from ovlift.kernels.fusion import DenseFeatures, MaskFeatures
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput
from ovlift.models.teachers.registry import TEACHERS
from ovlift.progress import progress
from ovlift.stages.base import PluginStage, StageContext


class Extract2DStage(PluginStage[TeacherConfig, Teacher]):
    """The frame loop around whichever teacher the config belongs to."""

    computes_on_device = True
    memory_gb = 6.0

    spec = EXTRACT2D_SPEC
    reads = ("input",)
    plugins = TEACHERS

    def __init__(self, config: TeacherConfig, variant: str | None = None) -> None:
        super().__init__(config, variant)
        if config.encoding == "masks" and not self.plugin.produces_masks:
            raise ValueError(
                f"teacher '{self.implementation}' produces dense features; encoding 'masks' needs a mask-based teacher"
            )

    def external_inputs(self, scene_id: str, inputs: Mapping[str, StageGroup]) -> dict[str, str]:
        return self.plugin.external_inputs(self.config, scene_id, inputs["input"].info["frame_names"])

    def load_teacher(self, ctx: StageContext) -> Teacher:
        """The teacher's model, loaded once per (teacher, config, device) per process."""
        device = torch.device(self.config.device or ctx.device)
        key = (self.plugin, self.config.model_dump_json(), str(device))
        if key not in _TEACHERS:
            if len(_TEACHERS) >= 4:
                _TEACHERS.pop(next(iter(_TEACHERS)))
            _TEACHERS[key] = self.plugin(self.config, device, ctx.text, f"teacher '{self.variant}'")
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
        images = FrameImages(scene)
        optional = {key: scene.array(f"frames/{key}") for key in ("labels", "instances") if f"frames/{key}" in scene}
        sink = (
            DenseSink(out, len(frames), hw, teacher.dim)
            if cfg.encoding == "dense"
            else MaskSink(out, len(frames), hw, cfg.top_k)
        )
        batch = cfg.frames_per_batch
        for start in progress(range(0, len(frames), batch), f"{ctx.scene_id}: {self.variant}", unit="batch"):
            sel = frames[start : start + batch]
            extra = {key: torch.from_numpy(array.oindex[sel]) for key, array in optional.items()}
            if images.depth_array is not None:
                extra["depth"] = torch.from_numpy(images.depth(sel))
            result = teacher(
                TeacherInput(
                    scene_id=ctx.scene_id,
                    frame_index=sel,
                    color=torch.from_numpy(images.color(sel)),
                    feature_hw=hw,
                    class_names=tuple(names) if names else None,
                    frame_names=tuple(scene.info["frame_names"][i] for i in sel),
                    **extra,
                )
            )
            sink.add(start, result)
        sink.finish(teacher.dim)
        out.write("frames", frames)
        out.set_info(
            teacher=self.implementation,
            encoding=cfg.encoding,
            feature_size=list(hw),
            channels=teacher.dim,
            text_encoder=teacher.text_encoder.normalised(),
        )


class DenseSink:
    """The ``dense`` encoding: (T, h, w, C) float16 features and a coverage mask."""

    def __init__(self, out: GroupWriter, frames: int, hw: tuple[int, int], dim: int) -> None:
        self.features = out.create("features", (frames, *hw, dim))
        self.valid = out.create("valid", (frames, *hw))

    def add(self, start: int, result: DenseFeatures | MaskFeatures) -> None:
        dense = result.images if isinstance(result, DenseFeatures) else result.decode()
        stop = start + len(dense)
        self.features[start:stop] = dense.to(torch.float16).cpu().numpy()
        self.valid[start:stop] = result.coverage().cpu().numpy()

    def finish(self, dim: int) -> None:
        pass


class MaskSink:
    """The ``masks`` encoding: per pixel the top-k mask ids (numbered through the scene) and weights,
    and one embedding per mask."""

    def __init__(self, out: GroupWriter, frames: int, hw: tuple[int, int], top_k: int) -> None:
        self.out, self.top_k = out, top_k
        self.ids = out.create("mask_ids", (frames, *hw, top_k))
        self.weights = out.create("mask_weights", (frames, *hw, top_k))
        self.embeddings: list[torch.Tensor] = []
        self.offset = 0

    def add(self, start: int, result: DenseFeatures | MaskFeatures) -> None:
        assert isinstance(result, MaskFeatures)
        ids, weights = _pad_k(result.ids, result.weights, self.top_k)
        stop = start + len(ids)
        self.ids[start:stop] = torch.where(ids >= 0, ids + self.offset, -1).cpu().numpy()
        self.weights[start:stop] = weights.to(torch.float16).cpu().numpy()
        self.embeddings.append(result.embeddings.to(torch.float16).cpu())
        self.offset += len(result.embeddings)

    def finish(self, dim: int) -> None:
        stacked = torch.cat(self.embeddings) if self.embeddings else torch.zeros(0, dim, dtype=torch.float16)
        self.out.write("mask_embeddings", stacked.numpy())


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
