"""The student's config, importable without spconv (which takes seconds to import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ovlift.config import FrozenConfig


class StudentConfig(FrozenConfig):
    planes: tuple[int, ...] = (32, 64, 128, 256, 128, 128, 96, 96)
    """Channels of the 4 encoder and 4 decoder levels (MinkUNet18A)."""
    layers: tuple[int, ...] = (2, 2, 2, 2, 2, 2, 2, 2)
    """Residual blocks per level."""
    init_dim: int = Field(32, ge=1)
    """Channels of the stem."""
    stem_kernel: int = Field(5, ge=1)
    """Kernel of the stem convolution (MinkUNet: 5)."""
    head: Literal["linear", "mlp"] = "linear"
    """Projection into the embedding space: linear (OpenScene, SAS) or 3 MLP layers (CUS3D)."""
    voxel_size_m: float = Field(0.02, gt=0)
    """Voxel edge: 0.02 m indoor, 0.05 m outdoor."""
    use_color: bool = False
    """Input colour (RGB) besides geometry; default geometry only (constant ones), as SAS."""

    @model_validator(mode="after")
    def _eight_levels(self) -> StudentConfig:
        if len(self.planes) != 8 or len(self.layers) != 8:
            raise ValueError("planes and layers need 8 entries (4 encoder, 4 decoder levels)")
        return self

    @property
    def in_channels(self) -> int:
        return 3 if self.use_color else 1
