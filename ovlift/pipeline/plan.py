"""Plans: which dataset, which store, and per stage its implementation and config.

A plan is a YAML file::

    store: work/store.zarr          # path (relative to this file) or fsspec URL
    dataset:
      name: toy                     # a key of registry.DATASETS
      num_scenes: 4                 # ... that dataset's Config fields
    vocabulary: scannet20
    device: cpu
    stages:
      input: {}                     # stage name -> its Config fields
      project:
        implementation: openscene   # optional; the first registered one by default
        depth_tolerance: 0.25

Every section is validated against the registered class's typed Config; an
unknown key or a wrong type fails with the file and the key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ovlift.cache_schema import fingerprint, scene_group_path
from ovlift.config import FrozenConfig
from ovlift.datasets.base import Dataset
from ovlift.pipeline.registry import dataset_class, stage_class, stage_order
from ovlift.stages.base import Stage
from ovlift.vocabularies import get_vocabulary


class PlanError(ValueError):
    """The plan file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class StagePlan:
    name: str
    implementation: str
    stage: Stage
    """The configured stage object."""

    @property
    def config(self) -> FrozenConfig:
        return self.stage.config

    def group_path(self, scene_id: str) -> str:
        return scene_group_path(scene_id, self.name, self.stage.variant())

    def fingerprint(self, inputs: Mapping[str, str]) -> str:
        """The group's fingerprint given the fingerprints of what it reads."""
        s = self.stage
        return fingerprint(s.name, s.implementation, s.version, s.config.normalised(), inputs)


@dataclass(frozen=True)
class Plan:
    store: str
    dataset: Dataset
    vocabulary: str
    device: str
    stages: dict[str, StagePlan]
    """Configured stages, upstream first."""
    source: str = "<dict>"

    def dataset_input(self, scene_id: str) -> tuple[str, str]:
        """(key, fingerprint) of a scene's source data, as ``input_fingerprints`` records it."""
        return f"dataset:{self.dataset.name}/{scene_id}", self.dataset.fingerprint(scene_id)

    def upstream(self, name: str) -> list[str]:
        return list(self.stages[name].stage.reads)

    def downstream(self, names: set[str]) -> set[str]:
        """The named stages and everything in the plan that (transitively) reads them."""
        result = set(names)
        for name in self.stages:  # upstream-first order: one pass suffices
            if any(r in result for r in self.upstream(name)):
                result.add(name)
        return result


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise PlanError(f"cannot read plan '{path}': {err.strerror}") from None
    except yaml.YAMLError as err:
        raise PlanError(f"{path}: not valid YAML: {err}") from None
    return plan_from_dict(data, base_dir=path.resolve().parent, source=str(path))


def plan_from_dict(data: Any, base_dir: str | Path = ".", source: str = "<dict>") -> Plan:
    if not isinstance(data, dict):
        raise PlanError(f"{source}: expected a mapping with keys store, dataset, stages")
    unknown = set(data) - {"store", "dataset", "vocabulary", "device", "stages"}
    if unknown:
        raise PlanError(f"{source}: unknown top-level keys {sorted(unknown)}")
    for key in ("store", "dataset", "stages"):
        if key not in data:
            raise PlanError(f"{source}: missing '{key}'")
    context = {"base_dir": str(base_dir)}

    store = str(data["store"])
    if "://" not in store and not Path(store).expanduser().is_absolute():
        store = str((Path(base_dir) / store).resolve())

    dataset_data = dict(data["dataset"] or {})
    if "name" not in dataset_data:
        raise PlanError(f"{source}: dataset: missing 'name'")
    dataset_name = dataset_data.pop("name")
    try:
        dataset_cls = dataset_class(dataset_name)
        dataset = dataset_cls(_validate(dataset_cls.Config, dataset_data, context, f"{source}: dataset"))
    except KeyError as err:
        raise PlanError(f"{source}: dataset: {err.args[0]}") from None
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, PlanError):
            raise
        raise PlanError(f"{source}: dataset: {err}") from None

    vocabulary = str(data.get("vocabulary", "scannet20"))
    try:
        get_vocabulary(vocabulary)
    except KeyError as err:
        raise PlanError(f"{source}: vocabulary: {err.args[0]}") from None

    stage_data = data["stages"] or {}
    if not isinstance(stage_data, dict):
        raise PlanError(f"{source}: stages: expected a mapping of stage name to config")
    stages: dict[str, StagePlan] = {}
    for name in stage_order():
        if name not in stage_data:
            continue
        entry = dict(stage_data[name] or {})
        implementation = entry.pop("implementation", None)
        try:
            cls = stage_class(name, implementation)
        except KeyError as err:
            raise PlanError(f"{source}: stages.{name}: {err.args[0]}") from None
        config = _validate(cls.Config, entry, context, f"{source}: stages.{name}")
        stages[name] = StagePlan(name, cls.implementation, cls(config))
    unknown_stages = set(stage_data) - set(stages)
    if unknown_stages:
        raise PlanError(f"{source}: stages: unknown stages {sorted(unknown_stages)}; known: {stage_order()}")
    for name, stage in stages.items():
        for upstream in stage.stage.reads:
            if upstream not in stages:
                raise PlanError(f"{source}: stages.{name} reads '{upstream}', which the plan does not configure")
    return Plan(
        store=store,
        dataset=dataset,
        vocabulary=vocabulary,
        device=str(data.get("device", "cpu")),
        stages=stages,
        source=source,
    )


def _validate(cls: type[FrozenConfig], data: dict, context: dict, where: str) -> FrozenConfig:
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
        )
        raise PlanError(f"{where}: {problems}") from None
