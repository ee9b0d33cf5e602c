"""Plans: which dataset, which store, and per stage its implementation and config.

A plan is a YAML file::

    store: work/store.zarr          # path (relative to this file) or fsspec URL
    dataset:
      name: toy                     # a key of registry.DATASETS
      num_scenes: 4                 # ... that dataset's Config fields
    vocabulary: scannet20           # for evaluation and queries
    device: cpu
    stages:
      input: {}                     # stage name -> its Config fields
      extract2d:                    # a stage with variants: variant name -> config
        teacher_a: {implementation: synthetic, noise_std: 0.1}
        teacher_b: {implementation: synthetic, bleed_px: 3}
      project:
        implementation: openscene   # optional; the first registered one by default
        depth_tolerance: 0.25

Every section is validated against the registered class's typed Config; an
unknown key or a wrong type fails with the file and the key path. Each
configured stage (variant) gets a *key*: its name, or ``name/variant``. Any
string may hold ``${NAME}`` or ``${NAME:-default}``, taken from the environment
(e.g. ``paths: ["${OVLIFT_DATA}/7scenes-redkitchen"]``), for variables named
``OVLIFT_*`` and those the plan declares under its top-level key ``environment``
(``environment: [SCANNET_ROOT]``); any other variable is an error, so a plan cannot
copy a secret (``AWS_SECRET_ACCESS_KEY``) into store attributes, logs or Prefect
artifacts. Commented plans to copy are in the repository's ``plans/`` folder;
``ovlift validate PLAN`` checks one.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import Field, ValidationError

from ovlift.cache_schema import StageGroup, fingerprint
from ovlift.config import FrozenConfig
from ovlift.datasets.base import Dataset
from ovlift.names import UnsafeNameError, check_name
from ovlift.pipeline.registry import dataset_class, stage_class, stage_classes, stage_order
from ovlift.stages.base import Stage
from ovlift.vocabularies import get_vocabulary

ENV_VAR = re.compile(r"\$\$|\$\{(\w+)(?::-([^}]*))?\}")
ENV_NAME = r"\w+"
ENV_PREFIX = "OVLIFT_"
"""Variables every plan may read; others must be declared (``PlanFile.environment``)."""
ConfigT = TypeVar("ConfigT", bound=FrozenConfig)


class PlanError(ValueError):
    """The plan file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class StagePlan:
    key: str
    """``name`` or ``name/variant``: how the plan, the CLI and ``ctx.inputs`` refer to it."""
    stage: Stage
    """The configured stage object."""

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def config(self) -> FrozenConfig:
        return self.stage.config

    @property
    def is_global(self) -> bool:
        return self.stage.is_global

    def group_path(self, scene_id: str | None) -> str:
        """Its group for a scene; a global stage has one group, whichever scene reads it."""
        return self.stage.path(None if self.is_global else scene_id)

    def fingerprint(self, inputs: Mapping[str, str]) -> str:
        """The group's fingerprint given the fingerprints of what it reads."""
        s = self.stage
        return fingerprint(s.name, s.implementation_id, s.version, s.config.fingerprinted(), inputs)


@dataclass(frozen=True)
class Plan:
    store: str
    dataset: Dataset
    vocabulary: str
    device: str
    stages: dict[str, StagePlan]
    """Configured stages by key, upstream first."""
    source: str = "<dict>"
    splits: Mapping[str, list[str]] = field(default_factory=dict)
    """Named lists of scene ids (e.g. train, val)."""

    def scenes_for(self, key: str) -> list[str]:
        """The scenes a stage covers: its split's, or every scene; then its validation split's."""
        stage = self.stages[key].stage
        split = stage.split
        scenes = self.dataset.scene_ids() if split is None or split == "all" else list(self.splits[split])
        return scenes + self.validation_scenes(key)

    def validation_scenes(self, key: str) -> list[str]:
        """The scenes of a stage's validation split (none without one)."""
        split = self.stages[key].stage.validation_split
        return [] if split is None else list(self.splits[split])

    def dataset_input(self, scene_id: str) -> tuple[str, str]:
        """(key, fingerprint) of a scene's source data, as ``input_fingerprints`` records it."""
        return f"dataset:{self.dataset.name}/{scene_id}", self.dataset.fingerprint(scene_id)

    def upstream(self, key: str) -> list[str]:
        """Keys of the configured stages that ``key`` reads."""
        stage = self.stages[key].stage
        found = []
        for name in stage.reads + stage.optional_reads:
            variants = [k for k, sp in self.stages.items() if sp.name == name]
            found += stage.select_inputs(name, variants)
        return found

    def keys_for(self, names: set[str] | list[str]) -> list[str]:
        """Plan keys named by stage names or keys (a name covers all its variants)."""
        wanted = set(names)
        unknown = [n for n in wanted if n not in self.stages and n not in {sp.name for sp in self.stages.values()}]
        if unknown:
            raise KeyError(f"stages {sorted(unknown)} are not in the plan {self.source}; it has {list(self.stages)}")
        return [k for k, sp in self.stages.items() if k in wanted or sp.name in wanted]

    def upstream_closure(self, names: set[str] | list[str]) -> set[str]:
        """Keys of the named stages and everything they (transitively) read."""
        result = set(self.keys_for(names))
        for key in reversed(list(self.stages)):  # downstream first: one pass suffices
            if key in result:
                result.update(self.upstream(key))
        return result


def external_inputs(plan: Plan, key: str, scene_id: str | None, groups: Mapping[str, StageGroup]) -> dict[str, str]:
    """Every input fingerprint of a stage group but those of upstream groups (scene None: a global stage)."""
    stage = plan.stages[key].stage
    found = dict([plan.dataset_input(scene_id)]) if stage.reads_dataset and scene_id is not None else {}
    found.update(stage.external_inputs(scene_id, groups))
    return found


class PlanFile(FrozenConfig):
    """The top level of a plan file; each section is then validated against its class's Config."""

    store: str
    """Store path (relative to the plan file) or fsspec URL."""
    dataset: dict[str, Any]
    """``name`` (a key of ``registry.DATASETS``) and that dataset's Config fields."""
    stages: dict[str, dict[str, Any] | None]
    """Stage name -> its Config fields (stages with variants: variant name -> Config fields)."""
    vocabulary: str = "scannet20"
    """Classes of evaluation and queries."""
    device: str = "cpu"
    """Torch device of every stage that does not set its own."""
    splits: dict[str, list[str] | str] = {}
    """Named non-empty lists of scene ids (e.g. train, val), or the name of one of the
    dataset's own splits (nuScenes: ``train: train``, ``val: val``)."""
    environment: list[Annotated[str, Field(pattern=f"^{ENV_NAME}$")]] = []
    """Environment variables besides ``OVLIFT_*`` that the plan's ``${NAME}`` may read
    (``[SCANNET_ROOT]``); read before the rest of the plan is expanded (``declared_environment``)."""


def declared_environment(data: Mapping[str, Any], source: str) -> frozenset[str]:
    """The variable names of a plan's ``environment`` key (``PlanFile.environment``), checked
    here because ``${NAME}`` is expanded before the plan is validated."""
    names = data.get("environment")
    if names is None:
        return frozenset()
    if not isinstance(names, list) or not all(isinstance(n, str) and re.fullmatch(ENV_NAME, n) for n in names):
        raise PlanError(
            f"{source}: environment: expected a list of environment variable names (e.g. [SCANNET_ROOT]), "
            f"found {names!r}"
        )
    return frozenset(names)


def expand_env(value: Any, source: str, key: str = "", declared: frozenset[str] = frozenset()) -> Any:
    """``${NAME}`` and ``${NAME:-default}`` in every string of a plan, from the environment,
    as a shell does (the default also when NAME is empty); ``$$`` is a literal ``$``. Only
    ``OVLIFT_*`` variables and ``declared`` ones may be read: any other is a PlanError, so a
    plan never copies an unrelated variable (a secret) into the store, logs or artifacts."""
    if isinstance(value, dict):
        return {k: expand_env(v, source, f"{key}.{k}" if key else str(k), declared) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, source, f"{key}[{i}]", declared) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if not name.startswith(ENV_PREFIX) and name not in declared:
            raise PlanError(
                f"{source}: {key}: '{match.group(0)}' reads environment variable '{name}', which the plan "
                f"does not declare: plans read {ENV_PREFIX}* variables and those listed in the top-level key "
                f"'environment' (add: environment: [{name}])"
            )
        if os.environ.get(name):
            return os.environ[name]
        if default is None:
            raise PlanError(
                f"{source}: {key}: environment variable '{name}' is not set (or write ${{{name}:-default}})"
            )
        return default

    return ENV_VAR.sub(substitute, value)


def load_plan(
    path: str | Path, check_paths: bool = False, list_scenes: bool = True, overrides: Sequence[str] = ()
) -> Plan:
    """The plan in a YAML file, with ``overrides`` applied (``apply_overrides``); see
    ``plan_from_dict`` for the checks."""
    path = Path(path)
    data = apply_overrides(read_yaml(path, "plan"), overrides, str(path))
    return plan_from_dict(data, path.resolve().parent, str(path), check_paths, list_scenes)


def read_yaml(path: Path, what: str) -> Any:
    """The YAML content of a plan (or another config file, ``what``); PlanError if unreadable."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as err:
        raise PlanError(f"cannot read {what} '{path}': {err.strerror}") from None
    except yaml.YAMLError as err:
        raise PlanError(f"{path}: not valid YAML: {err}") from None


def apply_overrides(data: Any, overrides: Sequence[str], source: str) -> Any:
    """``KEY=VALUE`` items (the CLI's ``--set``) written into the plan's mapping: KEY is a dotted
    path (``dataset.paths``, ``stages.project.cut_bound``; missing mappings are created), VALUE
    is YAML (``[/data/scans]``, ``20``, ``null``; anything else is a string). Applied before
    ``${ENV}`` expansion and validation, so a value is checked like the file's own; a relative
    path is, like every path of the plan, relative to the plan file."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise PlanError(f"--set '{item}': expected KEY=VALUE, e.g. dataset.paths=[/data/scannet/scans]")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node, parts = data, key.strip().split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict):
                where = ".".join(parts[:depth]) or "the plan"
                raise PlanError(f"{source}: --set '{key}': '{where}' is not a mapping")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return data


def plan_from_dict(
    data: Any, base_dir: str | Path = ".", source: str = "<dict>", check_paths: bool = False, list_scenes: bool = True
) -> Plan:
    """A validated plan. Every section is checked against its typed Config (an unknown
    key or a wrong type fails naming the source and the key path). ``list_scenes``
    also lists the dataset's scenes and checks the splits' scene ids against them;
    ``check_paths`` also requires every local path of the plan (data, models) to exist."""
    if not isinstance(data, dict):
        raise PlanError(f"{source}: expected a mapping with keys store, dataset, stages")
    data = expand_env(data, source, declared=declared_environment(data, source))
    context = {"base_dir": str(base_dir), "check_paths": check_paths}
    top = validate_config(PlanFile, data, context, source)
    store = _store_url(top.store, base_dir)
    dataset, scene_ids = dataset_from_entry(top.dataset, context, source, list_scenes)
    try:
        get_vocabulary(top.vocabulary)
    except (KeyError, FileNotFoundError, ValueError) as err:
        raise PlanError(f"{source}: vocabulary: {err.args[0]}") from None
    stages = _stage_plans(top.stages, context, source)
    result = Plan(
        store=store,
        dataset=dataset,
        vocabulary=top.vocabulary,
        device=top.device,
        stages=stages,
        source=source,
        splits=_splits(top.splits, scene_ids, dataset, source),
    )
    _bind_and_check_stages(result)
    return result


def _store_url(store: str, base_dir: str | Path) -> str:
    """A URL as it is; a local path made absolute (relative to the plan file's folder)."""
    if "://" not in store and not Path(store).expanduser().is_absolute():
        return str((Path(base_dir) / store).resolve())
    return store


def dataset_from_entry(
    fields: dict[str, Any], context: dict, source: str, list_scenes: bool
) -> tuple[Dataset, list[str] | None]:
    """The plan's dataset and (with ``list_scenes``) its scene ids."""
    dataset_data = dict(fields)
    if "name" not in dataset_data:
        raise PlanError(f"{source}: dataset: missing 'name'")
    dataset_name = dataset_data.pop("name")
    try:
        dataset_cls = dataset_class(dataset_name)
        dataset = dataset_cls(validate_config(dataset_cls.Config, dataset_data, context, f"{source}: dataset"))
        scene_ids = dataset.scene_ids() if list_scenes else None
    except KeyError as err:
        raise PlanError(f"{source}: dataset: {err.args[0]}") from None
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, PlanError):
            raise
        raise PlanError(f"{source}: dataset: {err}") from None
    return dataset, scene_ids


def _stage_plans(entries: Mapping[str, dict[str, Any] | None], context: dict, source: str) -> dict[str, StagePlan]:
    """The plan of each configured stage (of each variant of a stage with variants), upstream first."""
    unknown_stages = set(entries) - set(stage_order())
    if unknown_stages:
        raise PlanError(f"{source}: stages: unknown stages {sorted(unknown_stages)}; known: {stage_order()}")
    stages: dict[str, StagePlan] = {}
    for name in stage_order():
        if name not in entries:
            continue
        # _stage_entries is lazy: a variant's errors come after the variants before it are built
        for variant, fields, where in _stage_entries(name, entries[name] or {}, source):
            plan = _stage_plan(name, fields, context, where, variant)
            stages[plan.key] = plan
    return stages


def _stage_entries(name: str, entry: dict[str, Any], source: str) -> Iterator[tuple[str | None, dict, str]]:
    """(variant or None, a copy of its config fields, where) of each plan of stage ``name``."""
    if not _has_variants(name):
        yield None, dict(entry), f"{source}: stages.{name}"
        return
    if not entry:
        raise PlanError(f"{source}: stages.{name}: expected a mapping of variant name to config")
    for variant, config in entry.items():
        try:
            check_name(variant, "variant name")  # it becomes a folder of the store
        except UnsafeNameError as err:
            raise PlanError(f"{source}: stages.{name}: {err}") from None
        if config is not None and not isinstance(config, dict):
            raise PlanError(f"{source}: stages.{name}.{variant}: expected a mapping of config fields")
        yield variant, dict(config or {}), f"{source}: stages.{name}.{variant}"


def _bind_and_check_stages(plan: Plan) -> None:
    """Bind each stage to the plan's stages, then check that what each reads is configured,
    that its inputs suit it and that its split is defined."""
    source, stages = plan.source, plan.stages
    for stage_plan in stages.values():
        stage_plan.stage.bind({k: sp.stage for k, sp in stages.items()})
    for key, stage_plan in stages.items():
        for upstream in stage_plan.stage.reads:
            if not any(sp.name == upstream for sp in stages.values()):
                raise PlanError(f"{source}: stages.{key} reads '{upstream}', which the plan does not configure")
        try:
            stage_plan.stage.check_inputs(plan.upstream(key))
        except ValueError as err:
            raise PlanError(f"{source}: stages.{key}: {err}") from None
        split = stage_plan.stage.split
        if split not in (None, "all") and split not in plan.splits:
            raise PlanError(
                f"{source}: stages.{key} uses split '{split}', which the plan does not define "
                f"(add splits: {{{split}: [scene ids]}}, or set split: all)"
            )
        val = stage_plan.stage.validation_split
        if val is not None and val not in plan.splits:
            raise PlanError(f"{source}: stages.{key}: val_split '{val}' is not a split of the plan")
        if val is not None:
            training = plan.dataset.scene_ids() if split in (None, "all") else plan.splits[split]
            shared = sorted(set(training) & set(plan.splits[val]))
            if shared:
                raise PlanError(
                    f"{source}: stages.{key}: val_split '{val}' shares scenes with the training split: {shared}"
                )


def _splits(
    data: dict[str, list[str] | str], scene_ids: list[str] | None, dataset: Dataset, source: str
) -> dict[str, list[str]]:
    """The splits, each non-empty and (when the dataset was listed) of its scenes; a name
    is the dataset's own split of that name (resolved only when the dataset was listed)."""
    result: dict[str, list[str]] = {}
    for name, scenes in data.items():
        if isinstance(scenes, str):
            if scene_ids is None:
                result[name] = []
                continue
            named = dataset.named_splits()
            if scenes not in named:
                raise PlanError(
                    f"{source}: splits.{name}: dataset '{dataset.name}' has no split '{scenes}' "
                    f"(its splits here: {sorted(named) or 'none'})"
                )
            scenes = named[scenes]
        if not scenes:
            raise PlanError(f"{source}: splits.{name}: expected a non-empty list of scene ids")
        unknown = [s for s in scenes if scene_ids is not None and s not in scene_ids]
        if unknown:
            raise PlanError(f"{source}: splits.{name}: scenes {unknown} are not in dataset '{dataset.name}'")
        result[name] = list(scenes)
    return result


def _has_variants(name: str) -> bool:
    return any(cls.spec.variant is not None for cls in stage_classes(name))


def _stage_plan(name: str, entry: dict, context: dict, where: str, variant: str | None) -> StagePlan:
    implementation = entry.pop("implementation", None)
    try:
        cls, config_type, current = stage_class(name, implementation)
    except KeyError as err:
        raise PlanError(f"{where}: {err.args[0]}") from None
    if implementation is not None and implementation != current:
        warnings.warn(
            f"{where}: {name} '{implementation}' is now called '{current}'; the old name will go in a later version",
            FutureWarning,
            stacklevel=5,
        )
    config = validate_config(config_type, entry, context, where)
    key = name if variant is None else f"{name}/{variant}"
    try:
        return StagePlan(key, cls(config, variant=variant))
    except ValueError as err:
        raise PlanError(f"{where}: {err}") from None


def validate_config(cls: type[ConfigT], data: dict, context: dict, where: str) -> ConfigT:
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise PlanError(f"{where}: {problems}") from None
