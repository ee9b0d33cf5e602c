"""``scenes/<scene_id>/extract2d/<teacher>``: a 2D teacher's per-pixel features, and their reader.

Stored in the teacher's encoding:

* ``dense``: ``features`` (T, h, w, C) float16, one frame per chunk, and ``valid``
  (T, h, w): where the teacher has a feature (a zero vector is not "no feature");
* ``dense-int8``: ``feature_codes`` (T, h, w, C) int8 and ``feature_scale`` (T, h, w)
  float16 (feature = code x scale), and ``valid``;
* ``dense-pca``: ``pca_coefficients`` (T, h, w, P) float16 on the scene's basis
  ``pca_components`` (P, C) and ``pca_mean`` (C,), and ``valid``;
* ``masks``: ``mask_ids`` and ``mask_weights`` (T, h, w, K) per pixel, and
  ``mask_embeddings`` (Q, C); a pixel's feature is sum_k weight_k * embedding[id_k],
  and it has one where its total mask weight is above 0.

A group whose ``info.maps`` is ``streamed`` holds none of the per-frame arrays (only
``frames`` and the scene-wide ones: the PCA basis): its readers run the teacher again
(``Extract2DStage.features``), frames grouped as ``info.frames_per_batch`` says.

``TeacherFeatures`` reads any encoding for some frames.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ovlift.cache_schema.specs import ArraySpec, GroupSpec
from ovlift.cache_schema.store import StageGroup
from ovlift.errors import StageInputError
from ovlift.kernels.feature_codes import PCABasis, dequantize_int8
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
        ArraySpec(
            "feature_codes",
            "int8",
            ("T", "h", "w", "C"),
            (1, None, None, None),
            "dense-int8 encoding: per-pixel features / feature_scale, rounded",
            required=False,
        ),
        ArraySpec(
            "feature_scale",
            "float16",
            ("T", "h", "w"),
            (1, None, None),
            "dense-int8 encoding: per-pixel scale, max |feature| / 127",
            required=False,
        ),
        ArraySpec(
            "pca_coefficients",
            "float16",
            ("T", "h", "w", "P"),
            (1, None, None, None),
            "dense-pca encoding: per-pixel coefficients on pca_components",
            required=False,
        ),
        ArraySpec(
            "pca_components",
            "float32",
            ("P", "C"),
            (None, None),
            "dense-pca encoding: the scene's principal components, by decreasing variance",
            required=False,
        ),
        ArraySpec(
            "pca_mean", "float32", ("C",), (None,), "dense-pca encoding: the scene's mean feature", required=False
        ),
    ),
    info={
        "teacher": "implementation that produced it",
        "encoding": "dense, dense-int8, dense-pca or masks",
        "maps": "stored (the per-frame arrays are here) or streamed (none are: readers run the teacher)",
        "frames_per_batch": "frames per teacher batch (streamed readers group frames the same way)",
        "feature_size": "[rows, cols] of the feature maps",
        "channels": "feature channels C",
        "text_encoder": "config of the text encoder whose space the features live in (to embed queries)",
    },
)


FRAME_ARRAYS = {
    "dense": ("features", "valid"),
    "dense-int8": ("feature_codes", "feature_scale", "valid"),
    "dense-pca": ("pca_coefficients", "valid"),
    "masks": ("mask_ids", "mask_weights"),
}
"""Per encoding, the per-frame arrays (those a streamed group does not store)."""
SCENE_ARRAYS = {"dense-pca": ("pca_components", "pca_mean"), "masks": ("mask_embeddings",)}
"""Per encoding, the arrays a frame's decoding needs besides its own (a streamed masks
group has no ``mask_embeddings``: each batch brings its own)."""


def decode(encoding: str, arrays: Mapping[str, np.ndarray], device: torch.device | str) -> DenseFeatures | MaskFeatures:
    """Some frames' features from their arrays in ``encoding`` (``FRAME_ARRAYS`` and ``SCENE_ARRAYS``)."""
    t = {name: torch.from_numpy(value).to(device) for name, value in arrays.items()}
    if encoding == "dense":
        return DenseFeatures(t["features"], t["valid"])
    # the compact codes decode frame by frame: a batch's float32 temporaries would double its memory
    if encoding == "dense-int8":
        codes, scale = t["feature_codes"], t["feature_scale"]
        return DenseFeatures(torch.stack([dequantize_int8(c, s) for c, s in zip(codes, scale)]), t["valid"])
    if encoding == "dense-pca":
        basis = PCABasis(t["pca_components"], t["pca_mean"])
        return DenseFeatures(torch.stack([basis.decode(c) for c in t["pca_coefficients"]]), t["valid"])
    return MaskFeatures(t["mask_ids"], t["mask_weights"], t["mask_embeddings"])


class TeacherFeatures:
    """Reads a teacher's stored features for some frames, whatever the encoding.

    ``frame_arrays`` is what a streamed group's reader (``Extract2DStage.features``)
    replaces: everything else, decoding included, is common to both."""

    def __init__(self, group: StageGroup) -> None:
        self.group = group
        self.encoding = group.info["encoding"]
        self.frames = group.load("frames")
        self.channels = int(group.info["channels"])
        self.feature_hw = tuple(group.info["feature_size"])
        self.streamed = group.info.get("maps") == "streamed"
        self._local = {int(f): i for i, f in enumerate(self.frames)}
        self.scene_arrays = {name: group.load(name) for name in SCENE_ARRAYS.get(self.encoding, ()) if name in group}

    def positions(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For input frame indices, (positions among them that this teacher has, its local indices)."""
        pos = [(p, self._local[int(f)]) for p, f in enumerate(frames) if int(f) in self._local]
        return np.array([p for p, _ in pos], dtype=np.int64), np.array([i for _, i in pos], dtype=np.int64)

    def read(self, local: np.ndarray, device: torch.device | str = "cpu") -> DenseFeatures | MaskFeatures:
        return decode(self.encoding, self.frame_arrays(local), device)

    def frame_arrays(self, local: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays that decode these frames (local indices): their own, and the scene's."""
        if self.streamed:
            raise StageInputError(
                f"group '{self.group.path}' stores no feature maps (extract2d ran with maps: stream): read it "
                "through its extract2d stage (Extract2DStage.features), which runs the teacher"
            )
        own = {name: self.group.array(name).oindex[local] for name in FRAME_ARRAYS[self.encoding]}
        return own | self.scene_arrays


def teachers_in(inputs: Mapping[str, StageGroup]) -> dict[str, StageGroup]:
    """The extract2d groups among a stage's inputs, by teacher name."""
    return {key.split("/", 1)[1]: group for key, group in inputs.items() if key.startswith("extract2d/")}
