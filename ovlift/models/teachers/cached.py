"""``cached``: per-frame features computed elsewhere (LSeg, OpenSeg, ...), imported.

Researchers resume from features saved as one ``.npy`` or ``.pt`` file per frame.
``pattern`` locates them under ``path``: ``{scene}`` is the scene id, ``{frame}``
the frame's source name (e.g. ``frame-000010`` or ``seq-01/frame-000010``),
``{index}`` its index in the scene's input. Arrays are (h, w, C) or (C, h, w)
(``layout``) and are resized bilinearly to the feature grid. Files are
fingerprinted by content, so replacing them reruns the stage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ovlift.config import ModelPath
from ovlift.content_hash import file_digests
from ovlift.errors import StageInputError
from ovlift.kernels.fusion import DenseFeatures
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput
from ovlift.models.text import TextEncoderConfig, encoder_folder


class CachedConfig(TeacherConfig):
    path: ModelPath
    """Folder holding the per-frame feature files."""
    pattern: str = "{scene}/{frame}.npy"
    """File of a frame under ``path``; fields {scene}, {frame}, {index}."""
    layout: Literal["hwc", "chw"] = "hwc"
    """Axis order of the stored arrays."""
    channels: int = Field(ge=1)
    """Feature channels C (checked against every file)."""
    text: TextEncoderConfig = TextEncoderConfig()
    """Text encoder of the space the features live in (to embed queries)."""


def frame_file(config: CachedConfig, scene_id: str, frame_name: str, index: int) -> Path:
    return Path(config.path) / config.pattern.format(scene=scene_id, frame=frame_name, index=index)


class CachedTeacher(Teacher[CachedConfig]):
    name = "cached"
    version = "1"
    imports_outputs = True

    @classmethod
    def importing_from(cls, config: CachedConfig, folder: str) -> CachedConfig:
        return config.model_copy(update={"path": folder})

    @classmethod
    def output_files(cls, config: CachedConfig, scene_id: str, frames: Mapping[int, str]) -> list[Path]:
        return [frame_file(config, scene_id, name, index) for index, name in frames.items()]

    @property
    def dim(self) -> int:
        return self.config.channels

    @classmethod
    def model_folders(cls, config: CachedConfig) -> dict[str, str]:
        return {"text": encoder_folder(config.text)}

    @property
    def text_encoder(self) -> TextEncoderConfig:
        return self.config.text

    def load(self, path: Path, where: str) -> torch.Tensor:
        if not path.is_file():
            raise StageInputError(f"{where}: {self.what}: feature file '{path}' not found")
        try:
            array = (
                torch.load(path, map_location="cpu", weights_only=True)
                if path.suffix == ".pt"
                else torch.from_numpy(np.load(path))
            )
        except (OSError, ValueError, RuntimeError) as err:
            raise StageInputError(f"{where}: {self.what}: cannot read '{path}': {err}") from None
        array = torch.as_tensor(array, dtype=torch.float32)
        if array.ndim != 3:
            raise StageInputError(f"{where}: {self.what}: '{path}' has shape {tuple(array.shape)}, expected 3 axes")
        if self.config.layout == "hwc":
            array = array.permute(2, 0, 1)
        if array.shape[0] != self.config.channels:
            raise StageInputError(
                f"{where}: {self.what}: '{path}' has {array.shape[0]} channels ({self.config.layout}), "
                f"expected {self.config.channels}"
            )
        return array

    @classmethod
    def external_inputs(cls, config: CachedConfig, scene_id: str, frame_names: list[str]) -> dict[str, str]:
        strided = {i: frame_names[i] for i in range(0, len(frame_names), config.frame_stride)}
        paths = cls.output_files(config, scene_id, strided)
        present = [p for p in paths if p.is_file()]
        digests = dict(zip(present, file_digests(present)))
        parts = [f"{p.relative_to(config.path)}:{digests.get(p, 'missing')}" for p in paths]
        features = hashlib.blake2b(";".join(parts).encode(), digest_size=16).hexdigest()
        return {**super().external_inputs(config, scene_id, frame_names), "files:path": features}

    def __call__(self, batch: TeacherInput) -> DenseFeatures:
        maps = []
        for i, name in zip(batch.frame_index.tolist(), batch.frame_names):
            where = f"scene '{batch.scene_id}', frame '{name}'"
            array = self.load(frame_file(self.config, batch.scene_id, name, i), where)
            maps.append(F.interpolate(array[None], size=batch.feature_hw, mode="bilinear", align_corners=False)[0])
        return DenseFeatures(torch.stack(maps).permute(0, 2, 3, 1).to(torch.float16))
