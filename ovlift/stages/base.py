"""What a stage is: a typed config, what it reads, what it writes, and ``run``.

The runner does all I/O, caching and logging around ``run``: it opens the input
groups, hands the stage a writer for its output group, and publishes that group
only if ``run`` returns normally.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from ovlift.cache_schema import GroupSpec, GroupWriter, StageGroup
from ovlift.config import FrozenConfig
from ovlift.datasets.base import Dataset


class StageInputError(ValueError):
    """Bad input data; the message names the scene, frame and array."""


@dataclass
class StageContext:
    scene_id: str
    inputs: Mapping[str, StageGroup]
    """Complete groups of the stages named in ``reads``, by stage name."""
    dataset: Dataset | None
    """The dataset reader, for stages that read source data (``reads_dataset``)."""
    device: str
    log: logging.Logger

    def where(self, frame: str | None = None) -> str:
        return f"scene '{self.scene_id}'" + (f", frame '{frame}'" if frame is not None else "")


ConfigT = TypeVar("ConfigT", bound=FrozenConfig)


class Stage(ABC, Generic[ConfigT]):
    name: ClassVar[str]
    """The stage in the data flow (``input``, ``project``, ...): its group's path."""
    implementation: ClassVar[str]
    """Which implementation of that stage this is (the plan picks one by this name)."""
    version: ClassVar[str]
    """Bump when the outputs change for the same config: reruns it and what follows."""
    Config: ClassVar[type[FrozenConfig]]
    spec: ClassVar[GroupSpec]
    reads: ClassVar[tuple[str, ...]] = ()
    """Stages whose groups (same scene) this stage reads."""
    reads_dataset: ClassVar[bool] = False
    """Whether it reads the dataset's source files (the ``input`` stage)."""

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    def variant(self) -> str | None:
        """The ``<variant>`` path level, for stages written once per variant."""
        return None

    @abstractmethod
    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        """Turn the input groups into this stage's arrays, written through ``out``."""
