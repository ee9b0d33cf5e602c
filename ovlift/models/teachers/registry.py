"""The one list of 2D teachers: a plan's ``extract2d`` entry names one by ``implementation``.

To add a teacher, write its module (a ``Teacher[ItsConfig]`` subclass with a
``name`` and ``version``) and add its class to ``TEACHERS`` below; then run
``make docs`` to list it in docs/cache_schema.md. Nothing else changes.
"""

from __future__ import annotations

from ovlift.config import FrozenConfig
from ovlift.models.teachers.base import Teacher
from ovlift.models.teachers.cached import CachedTeacher
from ovlift.models.teachers.caption_aligned import CaptionAlignedTeacher
from ovlift.models.teachers.mask_crops import MaskCropsTeacher
from ovlift.models.teachers.maskclip import MaskCLIPTeacher
from ovlift.models.teachers.synthetic import SyntheticTeacher

TEACHERS: dict[str, type[Teacher]] = {
    cls.name: cls for cls in (SyntheticTeacher, MaskCLIPTeacher, MaskCropsTeacher, CaptionAlignedTeacher, CachedTeacher)
}
"""Teacher name -> class."""

RENAMED: dict[str, str] = {"mask-clip": "mask-crops"}
"""Old names that plans may still use (the pipeline registry resolves them, with a
warning): old name -> current name."""


def teacher_class(name: str) -> type[Teacher]:
    """The teacher called ``name``."""
    if name not in TEACHERS:
        raise KeyError(f"unknown teacher '{name}'; known teachers: {list(TEACHERS)}")
    return TEACHERS[name]


def teacher_for_config(config: FrozenConfig) -> type[Teacher]:
    """The teacher whose Config ``config`` is (each teacher has a Config class of its own)."""
    for cls in TEACHERS.values():
        if type(config) is cls.Config:
            return cls
    raise TypeError(f"{type(config).__name__} is the config of no registered teacher")
