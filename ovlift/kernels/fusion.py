"""Per-point reductions of what the points see, streamed frame batch by frame batch.

Memory is bounded by one batch of 2D features plus the (N, C) accumulator, never
by all frames' features at once. 2D features come in one of two encodings
(see ``DenseFeatures`` and ``MaskFeatures``); both are read only at the pixels
that points see.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch

from ovlift.kernels import native
from ovlift.kernels.projection import Correspondences, DepthCamera, VisibilityRule, visible_correspondences
from ovlift.kernels.scatter import scatter_add, scatter_max

Reduce = Literal["mean", "max"]


@dataclass
class DenseFeatures:
    """(B, h, w, C) feature maps (any float dtype)."""

    images: torch.Tensor
    valid: torch.Tensor | None = None
    """(B, h, w) bool: where the teacher has a feature (None: everywhere). A pixel
    without one (unlabelled, unsegmented) is no view of the point behind it."""

    def coverage(self) -> torch.Tensor:
        """(B, h, w) bool: pixels with a feature."""
        return self.valid if self.valid is not None else torch.ones(self.images.shape[:3], dtype=torch.bool)

    def linear(self, frame: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
        """Flat pixel indices (b * h * w + row * w + col) of (frame, (row, col)) views."""
        return _linear(self.images.shape, frame, pixel)

    def with_feature(self, linear: torch.Tensor) -> torch.Tensor | None:
        """Ascending indices of the views (flat pixel indices) that have a feature; None: all."""
        return None if self.valid is None else torch.nonzero(self.valid.reshape(-1)[linear]).squeeze(1)

    def table(self) -> torch.Tensor:
        """(B * h * w, C): the feature of flat pixel index i is row i."""
        return self.images.reshape(-1, self.channels)

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def rows(self, linear: torch.Tensor, buffers: FeatureBuffers) -> torch.Tensor:
        """(n, C) float32 features at flat pixel indices ``linear`` (b * h * w + row * w + col)."""
        flat = self.table()
        gathered = torch.index_select(flat, 0, linear, out=buffers.get(flat.dtype, len(linear)))
        if gathered.dtype != torch.float32:
            gathered = buffers.get(torch.float32, len(linear)).copy_(gathered)
        return gathered


@dataclass
class MaskFeatures:
    """Mask-based teachers' encoding: per pixel the ids and weights of its top-k masks,
    one embedding per mask. A pixel's feature is sum_k weight_k * embedding[id_k]
    (id -1 = no mask)."""

    ids: torch.Tensor
    """(B, h, w, K) integer mask ids into ``embeddings``, -1 for none."""
    weights: torch.Tensor
    """(B, h, w, K) float weights."""
    embeddings: torch.Tensor
    """(Q, C) one feature per mask."""

    @property
    def channels(self) -> int:
        return int(self.embeddings.shape[-1])

    def coverage(self) -> torch.Tensor:
        """(B, h, w) bool: pixels with some mask weight, i.e. with a feature."""
        return _has_mask(self.ids, self.weights)

    def linear(self, frame: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
        return _linear(self.ids.shape, frame, pixel)

    def with_feature(self, linear: torch.Tensor) -> torch.Tensor | None:
        k = self.ids.shape[-1]
        return torch.nonzero(_has_mask(self.ids.reshape(-1, k)[linear], self.weights.reshape(-1, k)[linear])).squeeze(1)

    def table(self) -> None:
        """None: a pixel's feature is computed from its masks (``rows``)."""
        return None

    def rows(self, linear: torch.Tensor, buffers: FeatureBuffers) -> torch.Tensor:
        k = self.ids.shape[-1]
        ids = self.ids.reshape(-1, k)[linear].to(torch.int64)
        weights = self.weights.reshape(-1, k)[linear].to(torch.float32) * (ids >= 0)
        emb = self.embeddings.to(torch.float32)
        out = buffers.get(torch.float32, len(linear)).zero_()
        for j in range(k):
            out.addcmul_(emb[ids[:, j].clamp(min=0)], weights[:, j : j + 1])
        return out

    def decode(self) -> torch.Tensor:
        """The (B, h, w, C) dense maps (for inspection and tests; fusion never needs them)."""
        b, h, w, _ = self.ids.shape
        linear = torch.arange(b * h * w, device=self.ids.device)
        return self.rows(linear, FeatureBuffers(self.channels, b * h * w, self.ids.device)).reshape(b, h, w, -1).clone()


FeatureSource = DenseFeatures | MaskFeatures


def _linear(shape: torch.Size, frame: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
    return (frame * shape[1] + pixel[:, 0]) * shape[2] + pixel[:, 1]


def _has_mask(ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Over the last (K) axis: whether any kept mask has weight above 0."""
    return ((weights > 0) & (ids >= 0)).any(-1)


class FeatureBuffers:
    """Reused (chunk, C) buffers per dtype (allocating per batch costs page faults)."""

    def __init__(self, channels: int, chunk: int, device: torch.device) -> None:
        self.channels, self.chunk, self.device = channels, chunk, device
        self._by_dtype: dict[torch.dtype, torch.Tensor] = {}
        self._positions: torch.Tensor | None = None

    def get(self, dtype: torch.dtype, n: int) -> torch.Tensor:
        if dtype not in self._by_dtype:
            self._by_dtype[dtype] = torch.empty(self.chunk, self.channels, dtype=dtype, device=self.device)
        return self._by_dtype[dtype][:n]

    def positions(self, n: int) -> torch.Tensor:
        """0, 1, ..., n - 1 (int64; n at most ``chunk``)."""
        if self._positions is None:
            self._positions = torch.arange(self.chunk, device=self.device)
        return self._positions[:n]


def pixel_views(
    source: FeatureSource, frame: torch.Tensor, pixel: torch.Tensor, buffers: FeatureBuffers
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The features of ``source`` at (frame, row, col) of each view, chunk by chunk.

    Yields (selection, rows): indices into the given views that have a feature
    (ascending), and their (n, C) float32 features in one of ``buffers`` (reused:
    consume it before the next chunk). A view whose pixel has no feature is skipped.
    """
    linear = source.linear(frame, pixel)
    selection = source.with_feature(linear)
    if selection is None:
        selection = torch.arange(len(linear), device=linear.device)
    for start in range(0, selection.shape[0], buffers.chunk):
        chosen = selection[start : start + buffers.chunk]
        yield chosen, source.rows(linear[chosen], buffers)


class FeatureFusion:
    """Running per-point mean (OpenScene: plain, unweighted) or max of pixel features.

    Each ``add`` orders its views by point (stably: a point's views keep their order), so
    that each accumulator row is read and written once per call and every point adds its
    views in the order given: the sums are the same whatever the batching, and the same on
    both paths. On the CPU ``native.fold_rows`` reads the features straight from the maps;
    elsewhere pixels are gathered in chunks of ``chunk`` rows through reused buffers (on
    the CPU, allocating one (M, C) gather per frame batch costs more in page faults than
    the arithmetic: measured 4-5x slower at C=512) and scattered.
    """

    def __init__(
        self,
        num_points: int,
        channels: int,
        reduce: Reduce = "mean",
        device: torch.device | str = "cpu",
        chunk: int | None = None,
    ) -> None:
        self.reduce = reduce
        device = torch.device(device)
        fill = 0.0 if reduce == "mean" else float("-inf")
        self.accumulator = torch.full((num_points, channels), fill, dtype=torch.float32, device=device)
        self.count = torch.zeros(num_points, dtype=torch.int64, device=device)
        self._buffers = FeatureBuffers(channels, chunk or (4096 if device.type == "cpu" else 1 << 18), device)

    def add(self, source: FeatureSource, frame: torch.Tensor, pixel: torch.Tensor, point_index: torch.Tensor) -> None:
        """Fold in the features of ``source`` at (frame, row, col) for each point; a
        pixel where the teacher has no feature is not counted as a view."""
        if source.channels != self.accumulator.shape[1]:
            raise ValueError(
                f"features have {source.channels} channels, the fusion expects {self.accumulator.shape[1]}"
            )
        linear = source.linear(frame, pixel)
        selection = source.with_feature(linear)
        point = point_index.to(torch.int64)
        if selection is not None:
            point, linear = point[selection], linear[selection]
        point, linear = _by_point(point, linear)
        self.count += torch.bincount(point, minlength=len(self.count))
        table = source.table()
        if native.available(self.accumulator.device) and table is not None and table.dtype in native.FOLD_DTYPES:
            native.fold_rows(self.accumulator, table, point, linear, self.reduce)
            return
        for start in range(0, len(point), self._buffers.chunk):
            rows = source.rows(linear[start : start + self._buffers.chunk], self._buffers)
            self._fold(rows, point[start : start + self._buffers.chunk])

    def _fold(self, rows: torch.Tensor, point: torch.Tensor) -> None:
        if native.available(self.accumulator.device):
            native.fold_rows(self.accumulator, rows, point, self._buffers.positions(len(rows)), self.reduce)
        elif self.reduce == "mean":
            scatter_add(rows, point, dim=0, out=self.accumulator)
        else:
            scatter_max(rows, point, dim=0, out=self.accumulator)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C) fused features (zeros where unseen) and (N,) number of views with a feature.

        Finalises the accumulator in place (no second (N, C) buffer): call once,
        after the last ``add``.
        """
        if self.reduce == "mean":
            self.accumulator /= self.count.clamp(min=1)[:, None].to(torch.float32)
        else:
            self.accumulator[self.count == 0] = 0.0
        self._buffers = FeatureBuffers(0, 0, self.accumulator.device)
        return self.accumulator, self.count


def _by_point(point: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``point`` and ``values`` reordered by point, stably (projection gives them sorted: then as is)."""
    if len(point) < 2 or bool((point[1:] >= point[:-1]).all()):
        return (point, *values)
    point, order = torch.sort(point, stable=True)
    return (point, *(v[order] for v in values))


def vote_counts(point_index: torch.Tensor, labels: torch.Tensor, num_points: int, num_classes: int) -> torch.Tensor:
    """(N, K) int32: how many views saw each point as each class (negative labels ignored)."""
    keep = labels >= 0
    flat = point_index[keep] * num_classes + labels[keep].to(torch.int64)
    ones = torch.ones_like(flat, dtype=torch.int32)
    counts = scatter_add(ones, flat, dim=0, dim_size=num_points * num_classes)
    return counts.view(num_points, num_classes)


@dataclass
class TeacherBatch:
    """One teacher's features for some of a batch's frames."""

    source: FeatureSource
    positions: torch.Tensor
    """(B_t,) positions in the batch of the frames ``source`` holds, in its order."""


@dataclass
class FrameBatch:
    """A few frames, everything at the feature grid's size."""

    frames: torch.Tensor
    """(B,) frame indices (recorded in the correspondences)."""
    world_to_cam: torch.Tensor
    intrinsics: torch.Tensor
    depth: torch.Tensor | None = None
    """(B, h, w) metres, or None (no depth); with ``depth_camera``, at the depth image's size."""
    teachers: dict[str, TeacherBatch] = field(default_factory=dict)
    """2D features to fuse, by teacher."""
    depth_camera: DepthCamera | None = None
    """The depth image's own camera, when it is not the colour camera (None: registered)."""


def project_and_fuse(
    points: torch.Tensor,
    batches: Iterable[FrameBatch],
    feature_hw: tuple[int, int],
    rule: VisibilityRule,
    fusions: dict[str, FeatureFusion] | None = None,
) -> tuple[Correspondences, torch.Tensor]:
    """Stream frame batches through projection and the fusion of each teacher's features.

    Returns the visible correspondences (compact dtypes, on the CPU, sorted by
    point, frames ascending within a point) and each point's number of views.
    A teacher's fusion sees only the frames it has features for.
    """
    fusions = fusions or {}
    parts = []
    points = points.to(torch.float64)  # as the projection computes (once, not per batch)
    for batch in batches:
        corr = visible_correspondences(
            points, batch.world_to_cam, batch.intrinsics, feature_hw, rule, batch.depth, depth_camera=batch.depth_camera
        )
        for name, teacher in batch.teachers.items():
            positions = teacher.positions.to(corr.frame_index.device)
            if torch.equal(positions, torch.arange(len(batch.frames), device=positions.device)):
                fusions[name].add(teacher.source, corr.frame_index, corr.pixel, corr.point_index)
                continue
            local = torch.full((len(batch.frames),), -1, dtype=torch.int64, device=positions.device)
            local[positions] = torch.arange(len(positions), device=positions.device)
            frame = local[corr.frame_index]
            keep = frame >= 0
            fusions[name].add(teacher.source, frame[keep], corr.pixel[keep], corr.point_index[keep])
        frames = batch.frames.to(corr.frame_index.device)[corr.frame_index]
        parts.append(  # compact dtypes: correspondences can number tens of millions
            Correspondences(
                corr.point_index.to(torch.int32).cpu(), frames.to(torch.int32).cpu(), corr.pixel.to(torch.int16).cpu()
            )
        )
    return Correspondences.merge_by_point(parts, points.shape[0])
