"""``project`` from released features: OpenScene's fused 2D features imported as the
scene's ``project`` group, so every later stage (``segment``, ``objects``, ``denoise``,
``fuse``, ``distill``, ``predict``, ``evaluate``) and ``ovlift query`` read them exactly
as features fused here.

Plan entry (``stages.project``)::

    implementation: released
    path: /data/openscene/scannet_multiview_openseg   # <scene>_<n>.pt, <scene>.pt
    teacher: openseg                                  # the name under fused/<teacher>
    channels: 768                                     # OpenSeg 768, LSeg 512
    text: {kind: clip, path: /models/clip-vit-large-patch14-336}

Decisions:

* The scene's points must be the point cloud the features were fused on, in the same
  order (``mask_full`` indexes them): the ``openscene`` dataset reads OpenScene's
  ``.pth`` clouds unchanged. A ``mask_full`` of another length is an error naming scene,
  file, expected and found.
* Several files of a scene: their union, the mean where they overlap (``file: null``,
  the default; OpenScene's 5 training files are random subsets of one bank, so the union
  is the bank over about 5 x 20,000 points); ``file: n`` reads ``<scene>_<n>.pt`` alone.
  A scene with no file is an error (a wrong folder is likelier than a scene with no view).
* No correspondences: the files hold no views, so ``point_index``/``frame_index``/
  ``pixel`` are empty and ``view_count`` is 1 where a feature was imported. CUS3D's
  ``denoise`` then votes with each point's fused feature (its ``observations: fused``).
* The text space is the plan's ``text`` encoder: OpenSeg's features live in CLIP
  ViT-L/14@336px's (768-d), LSeg's in ViT-B/32's (512-d); an encoder of another width is
  an error before any file is read.
* Fingerprint: the files' contents (and the text encoder's), not their folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, Field

from ovlift.cache_schema import GroupWriter, StageGroup
from ovlift.cache_schema.groups.project import PROJECT_SPEC, write_fused
from ovlift.config import FrozenConfig, ModelPath
from ovlift.content_hash import file_digests
from ovlift.errors import StageInputError
from ovlift.models.loading import model_inputs
from ovlift.models.text import TextEncoderConfig, encoder_dim, encoder_folder
from ovlift.names import check_name
from ovlift.openscene_files import fused_files, read_fused
from ovlift.stages.base import Stage, StageContext


def _teacher_name(name: str) -> str:
    return check_name(name, "teacher name")


class ReleasedFeaturesConfig(FrozenConfig):
    path: ModelPath
    """Folder of OpenScene's fused-feature files (``<scene>_<n>.pt`` or ``<scene>.pt``)."""
    teacher: Annotated[str, AfterValidator(_teacher_name)] = "openseg"
    """Name of the imported features (``fused/<teacher>``; later stages' ``teacher``)."""
    channels: int = Field(768, ge=1)
    """Feature channels (OpenSeg 768, LSeg 512), checked against every file and ``text``."""
    text: TextEncoderConfig
    """Text encoder of the space the features were made in (to embed classes and queries)."""
    file: int | None = Field(None, ge=0)
    """Read only ``<scene>_<file>.pt``; None: every file of the scene, their union."""


class ReleasedFeaturesStage(Stage[ReleasedFeaturesConfig]):
    """Fused features computed by OpenScene's scripts, imported."""

    implementation = "released"
    version = "1"
    spec = PROJECT_SPEC
    reads = ("input",)
    memory_gb = 4.0

    def files(self, scene_id: str, where: str) -> list[Path]:
        folder = Path(self.config.path)
        if not folder.is_dir():
            raise StageInputError(f"{where}: the released-features folder '{folder}' does not exist")
        found = fused_files(folder, scene_id)
        if self.config.file is not None:
            found = [p for p in found if p.name == f"{scene_id}_{self.config.file}.pt"]
        if not found:
            wanted = f"{scene_id}_{self.config.file}.pt" if self.config.file is not None else f"{scene_id}_<n>.pt"
            raise StageInputError(f"{where}: no feature file '{wanted}' (or '{scene_id}.pt') in '{folder}'")
        return found

    def external_inputs(self, scene_id: str | None, inputs: Mapping[str, StageGroup]) -> dict[str, str]:
        found = model_inputs({"text": encoder_folder(self.config.text)})
        if scene_id is None:
            return found
        try:
            paths = self.files(scene_id, f"scene '{scene_id}'")
        except StageInputError:  # running it says what is missing
            return {**found, "files:path": "missing"}
        parts = [f"{p.name}:{d}" for p, d in zip(paths, file_digests(paths))]
        return {**found, "files:path": hashlib.blake2b(";".join(parts).encode(), digest_size=16).hexdigest()}

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        cfg, where = self.config, ctx.where()
        width = encoder_dim(cfg.text)
        if width != cfg.channels:
            raise StageInputError(
                f"{where}: text encoder '{encoder_folder(cfg.text)}' embeds {width}-d, the features are "
                f"{cfg.channels}-d (channels): name the encoder the features were made with"
            )
        scene = ctx.inputs["input"]
        paths = self.files(ctx.scene_id or "", where)
        features, seen = read_fused(paths, scene.dims["N"], cfg.channels, where)
        ctx.log.info("%s: imported %d of %d points' features from %d file(s)", where, seen.sum(), len(seen), len(paths))
        out.write("point_index", np.zeros(0, dtype=np.int32))
        out.write("frame_index", np.zeros(0, dtype=np.int32))
        out.write("pixel", np.zeros((0, 2), dtype=np.int16))
        out.write("view_count", seen.astype(np.int32))
        write_fused(out, cfg.teacher, features, seen)
        out.set_info(
            feature_size=None,
            frames=[],
            teachers={cfg.teacher: {"channels": cfg.channels, "text_encoder": cfg.text.normalised()}},
            imported={cfg.teacher: [p.name for p in paths]},
        )
