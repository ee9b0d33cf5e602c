"""The one list of image generators: a plan's ``capability`` entry names one by ``implementation``."""

from __future__ import annotations

from ovlift.models.generators.base import ImageGenerator
from ovlift.models.generators.diffusion_sam import DiffusionSAMGenerator
from ovlift.models.generators.render import RenderGenerator

GENERATORS: dict[str, type[ImageGenerator]] = {cls.name: cls for cls in (DiffusionSAMGenerator, RenderGenerator)}
"""Generator name -> class; the first (SAS's) is the default."""


def generator_class(name: str) -> type[ImageGenerator]:
    if name not in GENERATORS:
        raise KeyError(f"unknown image generator '{name}'; known: {list(GENERATORS)}")
    return GENERATORS[name]
