"""``ovlift export``: a store's per-point results in OpenScene's file formats, so that
OpenScene's training and evaluation code (``dataset/feature_loader.py``,
``run/evaluate.py``) can read them. Layout under OUT::

    fused/<teacher>/<scene>_0.pt           project's fused features ({"feat", "mask_full"});
                                           <scene>.pt with plain_names (OpenScene's nuScenes)
    denoised/<teacher>/<scene>_0.pt        CUS3D's cleaned features (denoise), same layout
    multi-fused/<teacher>/<scene>_0.pt     SAS's multi-teacher features (fuse), same layout
    saved_feature/<scene>_openscene_feat_distill.npy   the student's (N, D) features
    predictions/<scene>_{distill,fusion,ensemble}.npy  (N,) uint8 class, 255 where none
    labelset.json                          classes the predictions index, text encoders

Decisions: one feature file per scene holding every seen point (OpenScene's form for
validation scenes; its training loader reads it too, as its only "random" file). Student
features are float16 (the store's precision; OpenScene's evaluation casts to half
anyway). Predictions use OpenScene's label convention: uint8 with 255 for "no label".
Files are written through a temporary name, so a crash leaves no half file. OpenScene's
nuScenes loader opens ``<scene>.pt``, its ScanNet and Matterport loaders ``<scene>_<n>.pt``:
``plain_names`` (``--plain-names``) writes the former. ``labelset.json`` is one for the
export: scenes whose predictions index other classes are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ovlift.atomic_files import write_atomically
from ovlift.cache_schema import Store
from ovlift.cache_schema.groups.lifted import lifted_features
from ovlift.cache_schema.groups.predict import PREDICT_SPEC
from ovlift.cache_schema.specs import IGNORE_LABEL
from ovlift.errors import StageInputError
from ovlift.names import check_name
from ovlift.openscene_files import write_fused
from ovlift.query import QUERY_SOURCES, QueryError, check_scene

EXPORTS = ("fused", "denoised", "multi-fused", "student", "predictions")
"""What ``export`` can write (default: all that the store holds)."""
NO_LABEL = 255
PREDICTIONS = {"distill": "labels_3d", "fusion": "labels_2d", "ensemble": "labels_ensemble"}
"""OpenScene's feature_type -> the predict array holding that prediction."""


def _save_npy(path: Path, array: np.ndarray) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
            np.save(f, array)

    write_atomically(path, save)


def openscene_labels(labels: np.ndarray, classes: int, where: str) -> np.ndarray:
    if classes >= NO_LABEL:
        raise QueryError(f"{where}: {classes} classes do not fit OpenScene's uint8 labels (255 is 'none')")
    return np.where(labels == IGNORE_LABEL, NO_LABEL, labels).astype(np.uint8)


def export_scene(
    store: Store, scene_id: str, out: Path, what: Iterable[str], plain_names: bool = False
) -> tuple[list[Path], dict | None]:
    """Write one scene's results; returns the files written (nothing for what the store lacks)
    and the label set its predictions index (None: none written)."""
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
            name = f"{scene_id}.pt" if plain_names else f"{scene_id}_0.pt"
            path = out / source / check_name(teacher, "teacher") / name
            write_fused(path, lifted.features, lifted.seen)
            written.append(path)
    predict = store.read(PREDICT_SPEC.path(scene_id)) if {"student", "predictions"} & what else None
    labelset = None
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
    return written, labelset


def export_store(
    store: Store, out: Path, scenes: list[str] | None, what: Iterable[str] = EXPORTS, plain_names: bool = False
) -> list[Path]:
    """Every scene's (or ``scenes``') results, and the one ``labelset.json`` they share."""
    unknown = sorted(set(what) - set(EXPORTS))
    if unknown:
        raise QueryError(f"unknown export {unknown}; choose among {', '.join(EXPORTS)}")
    written: list[Path] = []
    shared: tuple[str, dict] | None = None
    for scene_id in scenes or store.scene_ids():
        try:
            files, labelset = export_scene(store, scene_id, out, what, plain_names)
        except StageInputError as err:
            raise QueryError(str(err)) from None
        written += files
        if labelset is None:
            continue
        if shared is not None and labelset != shared[1]:
            raise QueryError(
                f"scene '{scene_id}': its predictions index classes {labelset['classes']} (encoder "
                f"{labelset['text_encoder']}), scene '{shared[0]}''s {shared[1]['classes']}: export them apart"
            )
        shared = (scene_id, labelset)
    if shared is not None:
        text = json.dumps(shared[1], indent=2) + "\n"
        written.append(write_atomically(out / "labelset.json", lambda tmp: tmp.write_text(text)))
    return written
