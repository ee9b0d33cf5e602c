"""Text queries against a scene's per-point features: a fused 2D teacher's
(``project``) or the distilled student's (``predict``).

The query names a thing ("a soft chair"); a leading article is dropped and the
rest goes through the same templates as class names, so queries and classes are
embedded alike. Similarity is the cosine between that embedding and each point's
feature; points no view saw get NaN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ovlift.cache_schema import Store
from ovlift.cache_schema.groups.input import INPUT_SPEC
from ovlift.cache_schema.groups.predict import PREDICT_SPEC
from ovlift.cache_schema.groups.project import PROJECT_SPEC, fused_teacher
from ovlift.errors import StageInputError
from ovlift.models.text import TextEncoderConfig
from ovlift.pipeline.text_cache import TextCache


class QueryError(ValueError):
    pass


@dataclass
class QueryResult:
    similarity: np.ndarray
    """(N,) cosine similarity per point, NaN where unseen."""
    source: str
    """Which features answered, e.g. ``fused/teacher_a``."""


def query_scene(
    store: Store,
    scene_id: str,
    text: str,
    source: Literal["fused", "student"] = "fused",
    teacher: str | None = None,
    templates: str = "single",
    device: str = "cpu",
) -> QueryResult:
    """Similarity of each point to ``text``: from a fused teacher's features
    (``project``), or from the distilled student's (``predict``)."""
    if source == "student":
        group = store.read(PREDICT_SPEC.path(scene_id))
        if group is None:
            raise QueryError(f"scene '{scene_id}': no complete 'predict' group in {store.url}; run the plan first")
        features, seen = group.load("features_3d"), None
        encoder, label = group.info["text_encoder"], "student"
    else:
        group = store.read(PROJECT_SPEC.path(scene_id))
        if group is None:
            raise QueryError(f"scene '{scene_id}': no complete 'project' group in {store.url}; run the plan first")
        try:
            teacher = fused_teacher(group, teacher, f"scene '{scene_id}'")
        except StageInputError as err:
            raise QueryError(str(err)) from None
        features, seen = group.load(f"fused/{teacher}/features"), group.load(f"fused/{teacher}/seen")
        encoder, label = group.info["teachers"][teacher]["text_encoder"], f"fused/{teacher}"
    encoder_config = TextEncoderConfig(**{**encoder, "templates": templates})
    name = re.sub(r"^(a|an|the)\s+", "", text.strip(), flags=re.IGNORECASE)
    query = TextCache(store, device)(encoder_config, [name])[0]  # cached: repeated queries skip the model
    similarity = (F.normalize(torch.from_numpy(features.astype(np.float32)), dim=-1) @ query).numpy()
    if seen is not None:
        similarity = np.where(seen, similarity, np.nan)
    return QueryResult(similarity, label)


def file_part(text: str) -> str:
    """``text`` made safe as part of a file name (scene ids and queries may hold '/', spaces, ...)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_.")


def write_query_outputs(
    store: Store, scene_id: str, text: str, source: str, teacher: str | None, templates: str, out: Path
) -> tuple[tuple[Path, Path], list[tuple[str, int]]]:
    """The PLY and PNG of a query, and the ground-truth classes of its 100 best points (if labelled)."""
    from ovlift.plots import colormap, query_views
    from ovlift.ply import write_ply

    result = query_scene(store, scene_id, text, source, teacher, templates)  # type: ignore[arg-type]
    scene = store.read(INPUT_SPEC.path(scene_id))
    points = scene.load("points")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{file_part(scene_id)}_{file_part(text.lower()) or 'query'}_{source}"
    ply = write_ply(out / f"{stem}.ply", points, colormap(result.similarity), similarity=result.similarity)
    camera = None
    valid = np.flatnonzero(scene.load("frames/pose_valid"))
    if len(valid):
        camera = (scene.array("frames/cam_to_world")[valid[0]], scene.array("frames/intrinsics")[valid[0]])
    png = query_views(
        points,
        result.similarity,
        out / f"{stem}.png",
        f"{scene_id}: '{text}' ({result.source})",
        camera,
    )
    top: list[tuple[str, int]] = []
    names = scene.info.get("class_names")
    if "labels" in scene and names:
        best = np.argsort(-np.nan_to_num(result.similarity, nan=-2))[:100]
        labels = scene.load("labels")[best]
        values, counts = np.unique(labels[labels >= 0], return_counts=True)
        top = sorted(((names[v], int(c)) for v, c in zip(values, counts)), key=lambda x: -x[1])
    return (ply, png), top
