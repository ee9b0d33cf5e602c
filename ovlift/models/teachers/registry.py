"""The one list of 2D teachers: a plan's ``extract2d`` entry names one by ``implementation``.

To add a teacher, write its module (a ``Teacher[ItsConfig]`` subclass with a
``name`` and ``version``) and add its class to ``TEACHERS`` below; then run
``make docs`` to list it in docs/cache_schema.md. Nothing else changes.
"""

from __future__ import annotations

from ovlift.config import Registry
from ovlift.models.teachers.base import Teacher
from ovlift.models.teachers.cached import CachedTeacher
from ovlift.models.teachers.caption_aligned import CaptionAlignedTeacher
from ovlift.models.teachers.mask_crops import MaskCropsTeacher
from ovlift.models.teachers.maskclip import MaskCLIPTeacher
from ovlift.models.teachers.regions import RegionsTeacher
from ovlift.models.teachers.synthetic import SyntheticTeacher
from ovlift.models.teachers.trained import TrainedTeacher

TEACHERS: Registry[Teacher] = Registry(
    "teacher",
    (
        SyntheticTeacher,
        MaskCLIPTeacher,
        MaskCropsTeacher,
        CaptionAlignedTeacher,
        CachedTeacher,
        TrainedTeacher,
        RegionsTeacher,
    ),
)
"""Teacher name -> class."""

RENAMED: dict[str, str] = {"mask-clip": "mask-crops"}
"""Old names that plans may still use (the pipeline registry resolves them, with a
warning): old name -> current name."""
