"""The one list of image generators: a plan's ``capability`` entry names one by ``implementation``."""

from __future__ import annotations

from ovlift.config import Registry
from ovlift.models.generators.base import ImageGenerator
from ovlift.models.generators.diffusion_sam import DiffusionSAMGenerator
from ovlift.models.generators.render import RenderGenerator

GENERATORS: Registry[ImageGenerator] = Registry("image generator", (DiffusionSAMGenerator, RenderGenerator))
"""Generator name -> class; the first (SAS's) is the default."""
