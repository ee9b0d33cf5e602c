"""``ovlift train-teachers SPEC``: train the ``trained`` teachers a spec lists, each into its folder.

A spec is YAML with one mapping, ``teachers``: name -> ``folder`` (relative to the spec
file) and the fields of ``TeacherTrainingConfig`` (its pool and validation datasets are
plan-style dataset entries). A teacher is cached: when its folder's ``training.json``
holds the same training fingerprint -- the training config, ``TRAINING_VERSION``, the
``trained`` teacher's version, every pool and validation scene's dataset fingerprint
(generator version and dataset config included) and the text encoder's identity (model
files and templates) -- it is skipped with a message; ``force`` retrains. A folder is
written whole into a temporary sibling and then swapped in, so an interrupted run never
leaves half a model behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ovlift.cache_schema import canonical_json
from ovlift.config import FrozenConfig, LocalPath, runtime_field
from ovlift.datasets.base import Dataset
from ovlift.models.teacher_training import (
    TRAINING_VERSION,
    TeacherTrainingConfig,
    TrainingResult,
    per_class_table,
    train_dense_teacher,
)
from ovlift.models.teachers.trained import MODEL_TYPE, TrainedTeacher, save_dense_model
from ovlift.models.text import encoder_identity
from ovlift.pipeline.plan import PlanError, dataset_from_entry, read_yaml, validate_config


class TeacherEntry(TeacherTrainingConfig):
    folder: LocalPath = runtime_field(...)
    """Where the model folder goes (relative to the spec file); not part of the fingerprint."""


class TeacherSpec(FrozenConfig):
    anchors: dict[str, Any] = {}
    """YAML anchors (``&rooms``) the entries share; read by nothing else."""
    teachers: dict[str, TeacherEntry] = Field(min_length=1)
    """Teacher name -> its folder and training config."""


def load_teacher_spec(path: str | Path) -> TeacherSpec:
    """The spec in a YAML file, relative paths resolved against its folder (PlanError if invalid)."""
    path = Path(path)
    data = read_yaml(path, "teacher spec")
    if not isinstance(data, dict):
        raise PlanError(f"{path}: expected a mapping with the key 'teachers'")
    return validate_config(TeacherSpec, data, {"base_dir": str(path.resolve().parent)}, str(path))


def entry_datasets(entry: TeacherEntry, where: str) -> tuple[list[Dataset], Dataset]:
    """The pool's datasets and the validation dataset of a spec entry."""
    context: dict[str, Any] = {"base_dir": "."}
    pool = [dataset_from_entry(p, context, f"{where}: pool[{i}]", False)[0] for i, p in enumerate(entry.pool)]
    return pool, dataset_from_entry(entry.validation, context, f"{where}: validation", False)[0]


def training_fingerprint(entry: TeacherEntry, pool: list[Dataset], validation: Dataset) -> str:
    """What a cached folder must match (see the module docstring)."""
    payload = {
        "config": entry.normalised(),
        "training_version": TRAINING_VERSION,
        "teacher_version": TrainedTeacher.version,
        "pool": [[d.fingerprint(s) for s in d.scene_ids()] for d in pool],
        "validation": [validation.fingerprint(s) for s in validation.scene_ids()],
        "text": encoder_identity(entry.text),
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def cached_fingerprint(folder: Path) -> str | None:
    """The training fingerprint a complete model folder records (None: none or incomplete)."""
    files = [folder / name for name in ("config.json", "model.safetensors", "training.json")]
    if not all(f.is_file() for f in files):
        return None
    try:
        return json.loads(files[2].read_text()).get("fingerprint")
    except ValueError:
        return None


def write_model_folder(folder: Path, result: TrainingResult, entry: TeacherEntry, key: str) -> None:
    """The model folder (config, weights, training record, table), swapped in whole."""
    if folder.exists() and any(folder.iterdir()) and not (folder / "config.json").is_file():
        raise PlanError(f"'{folder}' exists and is not a model folder: not overwriting it")
    if (folder / "config.json").is_file() and json.loads((folder / "config.json").read_text()).get(
        "model_type"
    ) != MODEL_TYPE:
        raise PlanError(f"'{folder}' holds another kind of model: not overwriting it")
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_dense_model(staging, result.model, result.meta)
    record = {
        "fingerprint": key,
        "training_version": TRAINING_VERSION,
        "teacher_version": TrainedTeacher.version,
        "config": entry.normalised(),
        "pool": result.pool,
        "validation": result.validation,
        "held_out": held_out_record(result),
        "seconds": round(result.seconds, 1),
        "loss_curve": loss_curve(result.losses),
    }
    (staging / "training.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (staging / "table.md").write_text(per_class_table(result.meta.classes, result.held_out, result.held_out_pixels))
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)


def held_out_record(result: TrainingResult) -> dict[str, Any]:
    """mIoU and per-class IoU (None: neither present nor predicted) and pixel counts."""
    classes = result.meta.classes
    return {
        "miou": result.held_out.miou,
        "overall_accuracy": result.held_out.overall_accuracy,
        "iou": {c: None if v != v else float(v) for c, v in zip(classes, result.held_out.iou, strict=True)},
        "pixels": {c: int(n) for c, n in zip(classes, result.held_out_pixels, strict=True)},
    }


def loss_curve(losses: list[float], parts: int = 10) -> list[float]:
    """The training loss averaged over each of ``parts`` consecutive stretches of steps."""
    chunks = [c for c in np.array_split(np.asarray(losses, dtype=np.float64), min(parts, len(losses))) if len(c)]
    return [round(float(c.mean()), 4) for c in chunks]


def train_teachers(
    spec_path: str | Path, only: list[str] | None = None, force: bool = False, echo: Callable[[str], None] = print
) -> dict[str, str]:
    """Trains the spec's teachers (``only`` these) unless cached: name -> ``trained`` or ``cached``."""
    spec = load_teacher_spec(spec_path)
    unknown = sorted(set(only or ()) - set(spec.teachers))
    if unknown:
        raise PlanError(f"{spec_path}: no teachers {unknown}; it lists {list(spec.teachers)}")
    outcome = {}
    for name, entry in spec.teachers.items():
        if only and name not in only:
            continue
        pool, validation = entry_datasets(entry, f"{spec_path}: teachers.{name}")
        key = training_fingerprint(entry, pool, validation)
        folder = Path(entry.folder)
        if not force and cached_fingerprint(folder) == key:
            echo(f"{name}: cached in {folder} (training fingerprint {key[:12]}); --force retrains")
            outcome[name] = "cached"
            continue
        result = train_dense_teacher(entry, pool, validation, name)
        write_model_folder(folder, result, entry, key)
        echo(f"{name}: trained in {result.seconds:.0f} s, held-out mIoU {100 * result.held_out.miou:.1f} % -> {folder}")
        outcome[name] = "trained"
    return outcome
