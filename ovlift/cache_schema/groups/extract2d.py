"""``scenes/<scene_id>/extract2d/<teacher>``: a 2D teacher's per-pixel features, and their reader.

Stored in the teacher's encoding:

* ``dense``: ``features`` (T, h, w, C) float16, one frame per chunk, and ``valid``
  (T, h, w): where the teacher has a feature (a zero vector is not "no feature");
* ``masks``: ``mask_ids`` and ``mask_weights`` (T, h, w, K) per pixel, and
  ``mask_embeddings`` (Q, C); a pixel's feature is sum_k weight_k * embedding[id_k],
  and it has one where its total mask weight is above 0.

``TeacherFeatures`` reads either encoding for some frames.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ovlift.cache_schema.specs import ArraySpec, GroupSpec
from ovlift.cache_schema.store import StageGroup
from ovlift.kernels.fusion import DenseFeatures, MaskFeatures

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
            "valid",
            "bool",
            ("T", "h", "w"),
            (1, None, None),
            "dense encoding: whether the teacher has a feature at the pixel (not unlabelled or unsegmented)",
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
            return DenseFeatures(
                torch.from_numpy(self.group.array("features").oindex[local]).to(device),
                torch.from_numpy(self.group.array("valid").oindex[local]).to(device),
            )
        ids = torch.from_numpy(self.group.array("mask_ids").oindex[local]).to(device)
        weights = torch.from_numpy(self.group.array("mask_weights").oindex[local]).to(device)
        assert self._embeddings is not None  # loaded in __init__ for the masks encoding
        return MaskFeatures(ids, weights, self._embeddings.to(device))


def teachers_in(inputs: Mapping[str, StageGroup]) -> dict[str, StageGroup]:
    """The extract2d groups among a stage's inputs, by teacher name."""
    return {key.split("/", 1)[1]: group for key, group in inputs.items() if key.startswith("extract2d/")}
