"""Base of every typed config (stages, datasets, plans).

Configs are frozen pydantic models: fields are typed and validated, unknown keys
are errors (a typo in a plan fails loudly), and the docstring under each field
becomes its description in ``--help`` output and generated docs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, create_model
from pydantic.fields import FieldInfo


class FrozenConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    def normalised(self) -> dict[str, Any]:
        """Every result-affecting field, defaults included, as JSON-ready values.

        This is what fingerprints hash. Fields declared with ``runtime_field``
        (device, batch sizes) change how a result is computed, not what it is,
        so they are left out: changing them is still a cache hit. Fields declared with
        ``added_field`` are left out while they hold their default (the behaviour from
        before they existed).
        """
        fields = type(self).model_fields
        left_out = {
            name
            for name, f in fields.items()
            if (f.json_schema_extra or {}).get("runtime")
            or ((f.json_schema_extra or {}).get("added") and getattr(self, name) == f.default)
        }
        return self.model_dump(mode="json", exclude=left_out)

    def fingerprinted(self) -> dict[str, Any]:
        """``normalised()`` without ``ModelPath`` fields, at any depth: what a stage's
        fingerprint hashes. Where a model lies is not what it is: its files' contents enter
        the fingerprint as external inputs (``model_inputs``), so a clone or a model folder
        moved elsewhere keeps every cached result."""
        return _without_model_paths(self, self.normalised())

    @classmethod
    def with_defaults(cls, **defaults: Any) -> type[Self]:
        """A subclass whose fields keep their types, bounds and docs but default to ``defaults``:
        a method's config states only what it sets differently from the shared one
        (``class Clip2SceneDistillConfig(TrainingConfig.with_defaults(lr=0.1))``)."""
        unknown = sorted(set(defaults) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {unknown}")
        fields: Any = {
            name: (
                cls.model_fields[name].annotation,
                FieldInfo.merge_field_infos(cls.model_fields[name], default=value),
            )
            for name, value in defaults.items()
        }
        return create_model(cls.__name__, __base__=cls, __module__=cls.__module__, **fields)


def runtime_field(default: Any, **kwargs: Any) -> Any:
    """A config field that does not change results (left out of fingerprints)."""
    return Field(default, json_schema_extra={"runtime": True}, **kwargs)


def added_field(default: Any, **kwargs: Any) -> Any:
    """A field added to an existing config whose default keeps the old behaviour: left out of
    fingerprints while it holds that default, so adding it reruns nothing cached."""
    return Field(default, json_schema_extra={"added": True}, **kwargs)


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Relative paths in a plan are relative to the plan file (``base_dir`` context);
    with the ``check_paths`` context (``ovlift validate --check-paths``) they must exist."""
    if "://" in value:
        return value
    context = info.context or {}
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(context.get("base_dir", ".")) / path
    if context.get("check_paths") and not path.exists():
        raise ValueError(f"path '{path.resolve()}' does not exist")
    return str(path.resolve())


LocalPath = Annotated[str, AfterValidator(_resolve_path)]
"""A filesystem path field, resolved against the plan file's folder."""


class _ContentHashed:
    """Marks a path whose files' contents the fingerprint hashes instead of the path."""


MODEL_PATH = _ContentHashed()
ModelPath = Annotated[str, AfterValidator(_resolve_path), MODEL_PATH]
"""A ``LocalPath`` to a model folder (or a folder of imported outputs) that its plug-in lists in
``model_folders`` or ``output_files``: left out of fingerprints, which hash the files' contents."""


def _names_model_path(annotation: Any) -> bool:
    """Whether ``ModelPath`` appears in a field's annotation (``ModelPath | None``,
    ``dict[str, ModelPath]``)."""
    if any(m is MODEL_PATH for m in getattr(annotation, "__metadata__", ())):
        return True
    return any(_names_model_path(arg) for arg in get_args(annotation))


def _without_model_paths(config: FrozenConfig, dumped: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for name, value in dumped.items():
        field = type(config).model_fields[name]
        if any(m is MODEL_PATH for m in field.metadata) or _names_model_path(field.annotation):
            continue
        nested = getattr(config, name)
        kept[name] = _without_model_paths(nested, value) if isinstance(nested, FrozenConfig) else value
    return kept


ConfigT = TypeVar("ConfigT", bound=FrozenConfig)


class Configurable(Generic[ConfigT]):
    """A class set up by one typed config. ``class X(Base[XConfig])`` sets ``X.Config``
    to ``XConfig``, so the type is written once and "go to definition" follows it."""

    Config: ClassVar[type[FrozenConfig]]
    """The config class this class is set up with (from its type parameter)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):  # types.get_original_bases from 3.12
            for arg in get_args(base):
                if isinstance(arg, type) and issubclass(arg, FrozenConfig):
                    cls.Config = arg


class Plugin(Configurable[ConfigT]):
    """A swappable piece a stage runs (a 2D teacher, an image generator), named in plans."""

    name: ClassVar[str]
    """What plans call it (``implementation: <name>``)."""
    version: ClassVar[str]
    """Bump when its outputs change for the same config: reruns its stage and what follows."""
    stable_id: ClassVar[str | None] = None
    """The id fingerprints use, when it differs from ``name`` (a renamed plug-in keeps its old
    name here so that its cached results stay valid)."""
    reads_ground_truth: ClassVar[str | None] = None
    """What ground truth it reads, if any (a stand-in painted from the labels): an oracle, which
    every group downstream and every report records; None: label-free."""


PluginT = TypeVar("PluginT", bound=Plugin)


class Registry(dict[str, type[PluginT]]):
    """Plug-ins of one kind (2D teachers, image generators) by the name plans call them:
    the one lookup of a class by its name and by its config."""

    def __init__(self, kind: str, classes: Iterable[type[PluginT]]) -> None:
        super().__init__((cls.name, cls) for cls in classes)
        self.kind = kind
        """What a plug-in is, for messages ("teacher")."""

    def named(self, name: str) -> type[PluginT]:
        """The plug-in a plan calls ``name``."""
        if name not in self:
            raise KeyError(f"unknown {self.kind} '{name}'; known {self.kind}s: {list(self)}")
        return self[name]

    def for_config(self, config: FrozenConfig) -> type[PluginT]:
        """The plug-in whose Config ``config`` is (each plug-in has a Config class of its own)."""
        for cls in self.values():
            if type(config) is cls.Config:
                return cls
        raise TypeError(f"{type(config).__name__} is the config of no registered {self.kind}")
