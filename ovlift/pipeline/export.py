"""``ovlift export``: a store's per-point results in OpenScene's file formats, so that
OpenScene's training and evaluation code (``dataset/feature_loader.py``,
``run/evaluate.py``) can read them. Layout under OUT::

    fused/<teacher>/<scene>_0.pt           project's fused features ({"feat", "mask_full"})
    denoised/<teacher>/<scene>_0.pt        CUS3D's cleaned features (denoise), same layout
    multi-fused/<teacher>/<scene>_0.pt     SAS's multi-teacher features (fuse), same layout
    saved_feature/<scene>_openscene_feat_distill.npy   the student's (N, D) features
    predictions/<scene>_{distill,fusion,ensemble}.npy  (N,) uint8 class, 255 where none
    labelset.json                          classes the predictions index, text encoders

Decisions: one feature file per scene holding every seen point (OpenScene's form for
validation scenes; its training loader reads it too, as its only "random" file). Student
features are float16 (the store's precision; OpenScene's evaluation casts to half
anyway). Predictions use OpenScene's label convention: uint8 with 255 for "no label".
Files are written through a temporary name, so a crash leaves no half file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ovlift.cache_schema import Store
from ovlift.cache_schema.groups.lifted import lifted_features
from ovlift.cache_schema.groups.predict import PREDICT_SPEC
from ovlift.cache_schema.specs import IGNORE_LABEL
from ovlift.names import check_name
from ovlift.openscene_files import write_fused
from ovlift.query import QUERY_SOURCES, QueryError, check_scene

EXPORTS = ("fused", "denoised", "multi-fused", "student", "predictions")
"""What ``export`` can write (default: all that the store holds)."""
NO_LABEL = 255
PREDICTIONS = {"distill": "labels_3d", "fusion": "labels_2d", "ensemble": "labels_ensemble"}
"""OpenScene's feature_type -> the predict array holding that prediction."""


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    tmp.replace(path)


def openscene_labels(labels: np.ndarray, classes: int, where: str) -> np.ndarray:
    if classes >= NO_LABEL:
        raise QueryError(f"{where}: {classes} classes do not fit OpenScene's uint8 labels (255 is 'none')")
    return np.where(labels == IGNORE_LABEL, NO_LABEL, labels).astype(np.uint8)


def export_scene(store: Store, scene_id: str, out: Path, what: Iterable[str]) -> list[Path]:
    """Write one scene's results; returns the files written (nothing for what the store lacks)."""
    check_name(scene_id, "scene id")
    check_scene(store, scene_id)
    what, written, where = set(what), [], f"scene '{scene_id}'"
    for source in ("fused", "denoised", "multi-fused"):
        spec = QUERY_SOURCES[source]
        group = store.read(spec.path(scene_id)) if source in what else None
        if group is None:
            continue
        teachers = list(group.info["teachers"]) if source == "fused" else [group.info["teacher"]]
        for teacher in teachers:
            lifted = lifted_features({spec.stage: group}, spec.stage, teacher, where)  # type: ignore[arg-type]
            path = out / source / check_name(teacher, "teacher") / f"{scene_id}_0.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_fused(path, lifted.features, lifted.seen)
            written.append(path)
    predict = store.read(PREDICT_SPEC.path(scene_id)) if {"student", "predictions"} & what else None
    if predict is not None:
        if "student" in what:
            path = out / "saved_feature" / f"{scene_id}_openscene_feat_distill.npy"
            _save_npy(path, predict.load("features_3d"))
            written.append(path)
        if "predictions" in what:
            for kind, array in PREDICTIONS.items():
                path = out / "predictions" / f"{scene_id}_{kind}.npy"
                _save_npy(path, openscene_labels(predict.load(array), len(predict.info["classes"]), where))
                written.append(path)
            labelset = {"classes": predict.info["classes"], "text_encoder": predict.info["text_encoder"]}
            save_json(out / "labelset.json", labelset)
    return written


def save_json(path: Path, value: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def export_store(store: Store, out: Path, scenes: list[str] | None, what: Iterable[str] = EXPORTS) -> list[Path]:
    unknown = sorted(set(what) - set(EXPORTS))
    if unknown:
        raise QueryError(f"unknown export {unknown}; choose among {', '.join(EXPORTS)}")
    written = []
    for scene_id in scenes or store.scene_ids():
        written += export_scene(store, scene_id, out, what)
    return written
