"""What a stage is: a typed config, what it reads, what it writes, and ``run``.

The runner does all I/O, caching and logging around ``run``: it opens the input
groups, hands the stage a writer for its output group, and publishes that group
only if ``run`` returns normally. A stage's name, scope and variants are those
of the ``GroupSpec`` it writes; its Config is its type parameter
(``class ProjectStage(Stage[ProjectConfig])``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic

from ovlift.cache_schema import GroupSpec, GroupWriter, Scope, StageGroup
from ovlift.config import ConfigT, Configurable, FrozenConfig, PluginT, Registry
from ovlift.datasets.base import Dataset
from ovlift.models.text import TextEmbedder


@dataclass(frozen=True)
class Resources:
    """What one run of a stage needs of the machine it runs on: where a scheduler may place
    it (``ovlift.flows`` turns these into Dask worker resources)."""

    gpu: bool = False
    """Needs a CUDA device: it computes on its device and that device is CUDA."""
    memory_gb: float = 2.0
    """Peak host memory of one run, roughly (held against a worker's ``MEMORY`` resource)."""


@dataclass
class StageContext:
    scene_id: str | None
    """The scene, or None for a global stage."""
    inputs: Mapping[str, StageGroup]
    """Complete groups of what the stage reads, by plan key (``input``, ``extract2d/<teacher>``);
    for a global stage only its global inputs."""
    dataset: Dataset | None
    """The dataset reader, for stages that read source data (``reads_dataset``)."""
    device: str
    log: logging.Logger
    text: TextEmbedder | None = None
    """Class-name embeddings, cached in the store (for teachers and queries)."""
    scene_inputs: Mapping[str, Mapping[str, StageGroup]] = field(default_factory=dict)
    """Global stages: per scene of their split, the per-scene groups they read."""
    validation_inputs: Mapping[str, Mapping[str, StageGroup]] = field(default_factory=dict)
    """Global stages with a ``validation_split``: the same, per scene of that split."""
    files: Path | None = None
    """A folder beside the store for this group's plain files (checkpoints, reports, plots)."""
    files_url: str | None = None
    """Where ``files`` live (the folder, or its object-store prefix): what attrs record."""

    def where(self, frame: str | None = None) -> str:
        if self.scene_id is None:
            return "global stage"
        return f"scene '{self.scene_id}'" + (f", frame '{frame}'" if frame is not None else "")


class Stage(ABC, Configurable[ConfigT]):
    spec: ClassVar[GroupSpec]
    """What it writes, and so its name, scope and variants."""
    implementation: ClassVar[str]
    """Which implementation of that stage this is (the plan picks one by this name)."""
    version: ClassVar[str]
    """Bump when the outputs change for the same config: reruns it and what follows."""
    reads: ClassVar[tuple[str, ...]] = ()
    """Stages whose groups (same scene) this stage reads."""
    optional_reads: ClassVar[tuple[str, ...]] = ()
    """Stages it reads when the plan configures them (e.g. teachers for ``project``); may name
    a stage not registered yet (then never read)."""
    reads_dataset: ClassVar[bool] = False
    """Whether it reads the dataset's source files (the ``input`` stage)."""
    writes_files: ClassVar[bool] = False
    """Whether it writes plain files beside the store (``ctx.files``)."""
    computes_on_device: ClassVar[bool] = False
    """Whether it runs tensors on its device (its config's ``device``, else the plan's):
    a GPU stage when that device is CUDA."""
    memory_gb: ClassVar[float] = 2.0
    """Peak host memory of one run on a full-size scene, roughly (``Resources.memory_gb``)."""

    def __init__(self, config: ConfigT, variant: str | None = None) -> None:
        self.spec.check_variant(variant)
        self.config = config
        self.variant = variant
        """The ``<variant>`` path level, for stages written once per variant."""

    @classmethod
    def config_type(cls, implementation: str) -> type[FrozenConfig]:
        """The Config a plan entry naming ``implementation`` is validated against."""
        return cls.Config

    @property
    def name(self) -> str:
        return self.spec.stage

    @property
    def oracle(self) -> str | None:
        """The ground truth this configuration reads as an oracle (ablations only), else None."""
        return None

    @property
    def is_global(self) -> bool:
        return self.spec.scope is Scope.GLOBAL

    def resources(self, plan_device: str, gpu_if_on_device: bool = False) -> Resources:
        """What it needs given the plan's device; ``gpu_if_on_device`` counts a stage that
        computes on its device as a GPU stage whatever the device (to place stages on GPU
        workers while they run on the CPU, as the placement test does)."""
        device = getattr(self.config, "device", None) or plan_device
        gpu = self.computes_on_device and (gpu_if_on_device or str(device).startswith("cuda"))
        return Resources(gpu=gpu, memory_gb=self.memory_gb)

    @property
    def implementation_id(self) -> str:
        """The implementation as fingerprints name it (stable across renames)."""
        return self.implementation

    def path(self, scene_id: str | None) -> str:
        """Its group for a scene (global stages: None, the one global group)."""
        return self.spec.path(scene_id, self.variant)

    @property
    def split(self) -> str | None:
        """The plan split whose scenes this stage covers (None: every scene)."""
        return getattr(self.config, "split", None)

    @property
    def validation_split(self) -> str | None:
        """A plan split whose scenes it also reads, to validate on (a training stage's ``val_split``)."""
        return getattr(self.config, "val_split", None)

    def select_inputs(self, name: str, keys: list[str]) -> list[str]:
        """Which configured keys of the read stage ``name`` this stage reads (default: all)."""
        return keys

    def check_inputs(self, keys: list[str]) -> None:
        """Raise ValueError if the plan's upstream keys cannot serve this stage."""

    def external_inputs(self, scene_id: str | None, inputs: Mapping[str, StageGroup]) -> dict[str, str]:
        """Fingerprints of what it reads outside the store (e.g. cached features); scene None: global."""
        return {}

    def bind(self, stages: Mapping[str, Stage]) -> None:
        """Called once the plan is built, with every configured stage by plan key: a stage that
        runs other stages' models (``capability`` runs the teachers) keeps what it needs."""

    @abstractmethod
    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        """Turn the input groups into this stage's arrays, written through ``out``."""


def teacher_stages(stages: Mapping[str, Stage]) -> dict[str, Stage]:
    """The plan's ``extract2d`` stages by variant (teacher name), for the stages that run a
    teacher (``capability``) or read its group through it (``features``: ``project``, ``denoise``)."""
    return {s.variant: s for s in stages.values() if s.name == "extract2d" and s.variant is not None}


class PluginStage(Stage[ConfigT], Generic[ConfigT, PluginT]):
    """A stage whose implementations are plug-ins: ``extract2d`` runs a 2D teacher, ``capability`` an
    image generator. One stage class serves them all; the plan's ``implementation`` names the plug-in,
    whose Config (the stage's own fields and the plug-in's) the entry is validated against, and whose
    name, version and stable id the stage's fingerprints carry."""

    plugins: ClassVar[Registry[Any]]
    """The plug-ins by name (``TEACHERS``, ``GENERATORS``)."""
    version_prefix: ClassVar[str] = ""
    """Prepended to the plug-in's version: bumps what the stage itself changes."""

    def __init__(self, config: ConfigT, variant: str | None = None) -> None:
        super().__init__(config, variant)
        self.plugin: type[PluginT] = self.plugins.for_config(config)
        """The plug-in class the config belongs to."""

    @classmethod
    def config_type(cls, implementation: str) -> type[FrozenConfig]:
        return cls.plugins.named(implementation).Config

    @property
    def implementation(self) -> str:  # type: ignore[override]  # the plug-in's, per instance
        return self.plugin.name

    @property
    def version(self) -> str:  # type: ignore[override]
        return self.version_prefix + self.plugin.version

    @property
    def implementation_id(self) -> str:
        return self.plugin.stable_id or self.plugin.name

    @property
    def oracle(self) -> str | None:
        if self.plugin.reads_ground_truth is None:
            return None
        return f"{self.plugin.reads_ground_truth} ({self.name} '{self.variant or self.implementation}')"
