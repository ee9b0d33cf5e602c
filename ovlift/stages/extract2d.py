"""``extract2d/<teacher>``: per-pixel features of a 2D teacher, one variant per teacher.

Frames stream from the ``input`` group in batches through the teacher (CPU or
CUDA) and are stored in the teacher's encoding (``ovlift.cache_schema.groups.extract2d``),
or, with ``maps: stream``, not stored: the group then describes the features, and its
readers (``features``: ``project``, ``denoise``) run the teacher on the frames they ask
for, batch by batch as this stage would, and decode exactly what it would have stored.
Which teacher runs is the plan's ``implementation``, looked up in
``ovlift.models.teachers.registry``; this one stage class serves every teacher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from ovlift.cache_schema import GroupWriter, StageGroup, Store
from ovlift.cache_schema.groups.extract2d import EXTRACT2D_SPEC, FRAME_ARRAYS, TeacherFeatures
from ovlift.cache_schema.groups.frames import FrameImages
from ovlift.cache_schema.groups.input import INPUT_SPEC
from ovlift.errors import StageInputError
from ovlift.kernels.feature_codes import PCABasis, fit_pca, quantize_int8
from ovlift.kernels.fusion import DenseFeatures, MaskFeatures
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput
from ovlift.models.teachers.registry import TEACHERS
from ovlift.progress import progress
from ovlift.stages.base import PluginStage, StageContext

if TYPE_CHECKING:
    import zarr

PCA_FIT_PIXELS = 1 << 17
"""At most this many pixels of the fit frames go into the PCA (every k-th valid one)."""


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
        frames = np.arange(0, scene.dims["T"], cfg.frame_stride, dtype=np.int32)
        pca = None
        if cfg.encoding == "dense-pca":
            pca = self._fit_pca(teacher, scene, ctx.scene_id, frames)
            out.write("pca_components", pca.components.numpy())
            out.write("pca_mean", pca.mean.numpy())
        if cfg.maps == "store":
            sink = FrameSink(out, len(frames))
            batch = cfg.frames_per_batch
            for start in progress(range(0, len(frames), batch), f"{ctx.scene_id}: {self.variant}", unit="batch"):
                result = run_teacher(teacher, scene, ctx.scene_id, frames[start : start + batch])
                sink.add(start, encode(result, cfg, pca))
            sink.finish()
        out.write("frames", frames)
        out.set_info(
            teacher=self.implementation,
            encoding=cfg.encoding,
            feature_size=[cfg.feature_height, cfg.feature_width],
            channels=teacher.dim,
            text_encoder=teacher.text_encoder.normalised(),
            maps="stored" if cfg.maps == "store" else "streamed",
            frames_per_batch=cfg.frames_per_batch,
        )

    def _fit_pca(self, teacher: Teacher, scene: StageGroup, scene_id: str | None, frames: np.ndarray) -> PCABasis:
        """The scene's basis, fitted on ``pca_fit_frames`` frames spread evenly over ``frames``
        (a first, short pass: fitting on every frame would run the teacher twice over the scene),
        every k-th of their valid pixels (at most ``PCA_FIT_PIXELS``), on the teacher's device."""
        cfg = self.config
        spread = np.linspace(0, len(frames) - 1, min(cfg.pca_fit_frames, len(frames)))
        sample = frames[np.unique(spread.round().astype(np.int64))]
        step = -(-len(sample) * cfg.feature_height * cfg.feature_width // PCA_FIT_PIXELS)
        pixels = []
        for start in range(0, len(sample), cfg.frames_per_batch):
            result = run_teacher(teacher, scene, scene_id, sample[start : start + cfg.frames_per_batch])
            dense = result.images if isinstance(result, DenseFeatures) else result.decode()
            pixels.append(dense[result.coverage().to(dense.device)][::step].float())
        found = torch.cat(pixels)
        if not len(found):
            raise StageInputError(f"scene '{scene_id}': teacher '{self.variant}' has no feature on the PCA fit frames")
        basis = fit_pca(found, cfg.pca_channels)
        return PCABasis(basis.components.cpu(), basis.mean.cpu())

    def features(self, group: StageGroup, ctx: StageContext) -> TeacherFeatures:
        """The reader of this teacher's group: its stored maps, or, for a streamed group, the
        teacher run again on the frames asked for (``StreamedFeatures``)."""
        reader = TeacherFeatures(group)
        if not reader.streamed:
            return reader
        made_by = type(self.config).model_validate(group.attrs["config"]).fingerprinted()
        if group.attrs["implementation"] != self.implementation or made_by != self.config.fingerprinted():
            raise StageInputError(
                f"{ctx.where()}: '{group.path}' was streamed by another config than the plan's "
                f"extract2d '{self.variant}': rerun extract2d"
            )
        scene = _streamed_input(group, ctx)
        return StreamedFeatures(group, self.load_teacher(ctx), scene, ctx.scene_id, self.config)


def run_teacher(
    teacher: Teacher, scene: StageGroup, scene_id: str | None, frames: np.ndarray
) -> DenseFeatures | MaskFeatures:
    """The teacher's output on some frames of the scene's ``input`` group: the one place that
    reads frames for a teacher (extraction, the PCA fit and streamed readers all call it)."""
    cfg = teacher.config
    names = scene.info.get("class_names")
    images = FrameImages(scene)
    extra = {
        key: torch.from_numpy(scene.array(f"frames/{key}").oindex[frames])
        for key in ("labels", "instances")
        if f"frames/{key}" in scene
    }
    if images.depth_array is not None:
        extra["depth"] = torch.from_numpy(images.depth(frames))
    return teacher(
        TeacherInput(
            scene_id=scene_id or "",
            frame_index=frames,
            color=torch.from_numpy(images.color(frames)),
            feature_hw=(cfg.feature_height, cfg.feature_width),
            class_names=tuple(names) if names else None,
            frame_names=tuple(scene.info["frame_names"][i] for i in frames),
            **extra,
        )
    )


def encode(result: DenseFeatures | MaskFeatures, cfg: TeacherConfig, pca: PCABasis | None) -> dict[str, np.ndarray]:
    """A batch's arrays in the config's encoding, as stored (``FRAME_ARRAYS``); the masks
    encoding adds the batch's ``mask_embeddings``, which its ids (local to the batch) index."""
    if cfg.encoding == "masks":
        assert isinstance(result, MaskFeatures)
        ids, weights = _pad_k(result.ids, result.weights, cfg.top_k)
        return {
            "mask_ids": ids.to(torch.int32).cpu().numpy(),
            "mask_weights": weights.to(torch.float16).cpu().numpy(),
            "mask_embeddings": result.embeddings.to(torch.float16).cpu().numpy(),
        }
    dense = result.images if isinstance(result, DenseFeatures) else result.decode()
    arrays = {"valid": result.coverage().cpu().numpy()}
    if cfg.encoding == "dense":
        arrays["features"] = dense.to(torch.float16).cpu().numpy()
    elif cfg.encoding == "dense-int8":
        codes, scale = quantize_int8(dense)
        arrays |= {"feature_codes": codes.cpu().numpy(), "feature_scale": scale.cpu().numpy()}
    else:
        assert pca is not None  # fitted before the frames are encoded
        arrays["pca_coefficients"] = pca.encode(dense).cpu().numpy()
    return arrays


def join_batches(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Encoded batches as one: frames concatenated, mask ids renumbered through the
    concatenated ``mask_embeddings`` (as the store numbers them through the scene)."""
    joined = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    if "mask_ids" in joined:
        offsets = np.cumsum([0] + [len(part["mask_embeddings"]) for part in parts])
        joined["mask_ids"] = np.concatenate([_renumber(p["mask_ids"], int(o)) for p, o in zip(parts, offsets)])
    return joined


def _renumber(ids: np.ndarray, offset: int) -> np.ndarray:
    return np.where(ids >= 0, ids + offset, -1).astype(np.int32)


class FrameSink:
    """Writes encoded batches into the group's per-frame arrays (created at the first batch,
    one frame per chunk), mask ids numbered through the scene's ``mask_embeddings``."""

    def __init__(self, out: GroupWriter, frames: int) -> None:
        self.out, self.frames = out, frames
        self.arrays: dict[str, zarr.Array] = {}
        self.embeddings: list[np.ndarray] = []
        self.masks = 0

    def add(self, start: int, encoded: dict[str, np.ndarray]) -> None:
        per_frame = {name: value for name, value in encoded.items() if name != "mask_embeddings"}
        if "mask_embeddings" in encoded:
            per_frame["mask_ids"] = _renumber(encoded["mask_ids"], self.masks)
            self.embeddings.append(encoded["mask_embeddings"])
            self.masks += len(encoded["mask_embeddings"])
        for name, value in per_frame.items():
            if name not in self.arrays:
                self.arrays[name] = self.out.create(name, (self.frames, *value.shape[1:]))
            self.arrays[name][start : start + len(value)] = value

    def finish(self) -> None:
        if self.embeddings:
            self.out.write("mask_embeddings", np.concatenate(self.embeddings))


class StreamedFeatures(TeacherFeatures):
    """A streamed group's reader: the frames asked for are run through the teacher in the
    batches extraction forms (``info.frames_per_batch`` consecutive extracted frames), encoded
    as extraction would store them and decoded as the stored reader decodes them, so every
    reader gets the bytes it would have read. The last batch is kept: readers ask for frames
    in order, and a batch often serves two of their reads."""

    def __init__(
        self, group: StageGroup, teacher: Teacher, scene: StageGroup, scene_id: str | None, config: TeacherConfig
    ) -> None:
        super().__init__(group)
        self.teacher, self.scene, self.scene_id, self.config = teacher, scene, scene_id, config
        self.batch = int(group.info["frames_per_batch"])
        pca = self.scene_arrays
        self.pca = PCABasis(*map(torch.from_numpy, (pca["pca_components"], pca["pca_mean"]))) if pca else None
        self._kept: tuple[int, dict[str, np.ndarray]] | None = None

    def frame_arrays(self, local: np.ndarray) -> dict[str, np.ndarray]:
        local = np.asarray(local, dtype=np.int64)
        batches = np.unique(local // self.batch)
        parts = [self._encoded(int(b)) for b in batches]
        names = FRAME_ARRAYS[self.encoding]
        starts = np.cumsum([0] + [len(part[names[0]]) for part in parts])
        joined = parts[0] if len(parts) == 1 else join_batches(parts)
        rows = starts[np.searchsorted(batches, local // self.batch)] + local % self.batch
        own = {name: joined[name][rows] for name in names}
        if "mask_embeddings" in joined:  # what the ids index: the batches' own masks
            own["mask_embeddings"] = joined["mask_embeddings"]
        return own | self.scene_arrays

    def _encoded(self, index: int) -> dict[str, np.ndarray]:
        """Batch ``index`` of the extracted frames, encoded."""
        if self._kept is not None and self._kept[0] == index:
            return self._kept[1]
        frames = self.frames[index * self.batch : (index + 1) * self.batch]
        encoded = encode(run_teacher(self.teacher, self.scene, self.scene_id, frames), self.config, self.pca)
        self._kept = (index, encoded)
        return encoded


def _streamed_input(group: StageGroup, ctx: StageContext) -> StageGroup:
    """The ``input`` group a streamed group was extracted from (the version its fingerprint names)."""
    path = INPUT_SPEC.path(ctx.scene_id)
    fingerprint = group.attrs["input_fingerprints"].get(path)
    scene = Store(group.store_url).read(path, fingerprint=fingerprint) if fingerprint else None
    if scene is None:
        raise StageInputError(
            f"{ctx.where()}: '{group.path}' streams from '{path}' as it was when extracted, which is no "
            "longer in the store: rerun extract2d"
        )
    return scene


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
