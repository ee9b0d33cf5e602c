"""Text queries against a scene's per-point features: a fused 2D teacher's
(``project``), the same cleaned (``denoise``, ``fuse``) or the distilled student's
(``predict``).

The query names a thing ("a soft chair"); a leading article is dropped and the
rest goes through the same templates as class names, so queries and classes are
embedded alike. Similarity is the cosine between that embedding and each point's
feature; points no view saw get NaN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovlift.cache_schema import Store
from ovlift.cache_schema.groups.denoise import DENOISE_SPEC
from ovlift.cache_schema.groups.fuse import FUSE_SPEC
from ovlift.cache_schema.groups.input import INPUT_SPEC
from ovlift.cache_schema.groups.lifted import lifted_features
from ovlift.cache_schema.groups.predict import PREDICT_SPEC
from ovlift.cache_schema.groups.project import PROJECT_SPEC
from ovlift.errors import StageInputError, name_list
from ovlift.models.text import TextEmbedder, TextEncoderConfig
from ovlift.names import file_part
from ovlift.pipeline.text_cache import TextCache


class QueryError(ValueError):
    pass


@dataclass
class QueryResult:
    similarity: np.ndarray
    """(N,) cosine similarity per point, NaN where unseen."""
    source: str
    """Which features answered, e.g. ``fused/teacher_a``."""


@dataclass
class SourceFeatures:
    """A scene's per-point features of one source, loaded once and queried by many texts."""

    unit: torch.Tensor
    """(N, D) float32 features scaled to unit length (rows of unseen points stay 0)."""
    seen: np.ndarray | None
    """(N,) bool: points with a feature (None: every point, the student's)."""
    text_encoder: dict
    """The encoder of the features' space, as the group recorded it (to embed texts alike)."""
    label: str
    """Which features these are, e.g. ``fused/teacher_a`` or ``student``."""


QUERY_SOURCES = {"student": PREDICT_SPEC, "fused": PROJECT_SPEC, "denoised": DENOISE_SPEC, "multi-fused": FUSE_SPEC}
"""Features a query can read: the distilled student's (``predict``), a fused teacher's
(``project``), CUS3D's denoised (``denoise``) or SAS's multi-teacher set (``fuse``)."""


def query_words(text: str) -> str:
    """What gets embedded: ``text`` without surrounding blanks and a leading article."""
    if not text.strip():
        raise QueryError(f"the query text is empty ({text!r}): say what to look for, e.g. 'a soft chair'")
    return re.sub(r"^(a|an|the)\s+", "", text.strip(), flags=re.IGNORECASE)


def check_scene(store: Store, scene_id: str) -> None:
    scenes = store.scene_ids()
    if scene_id not in scenes:
        raise QueryError(f"no scene '{scene_id}' in {store.url}; scenes: {name_list(scenes)}")


def source_features(store: Store, scene_id: str, source: str = "fused", teacher: str | None = None) -> SourceFeatures:
    """The features of ``source`` (a key of ``QUERY_SOURCES``) for a scene, unit length;
    ``teacher`` chooses among a ``project`` group's fused teachers."""
    if source not in QUERY_SOURCES:
        raise QueryError(f"unknown query source '{source}'; one of {', '.join(QUERY_SOURCES)}")
    check_scene(store, scene_id)
    spec = QUERY_SOURCES[source]
    group = store.read(spec.path(scene_id))
    if group is None:
        raise QueryError(f"scene '{scene_id}': no complete '{spec.stage}' group in {store.url}; run the plan first")
    if source == "student":
        features, seen, encoder, label = group.load("features_3d"), None, group.info["text_encoder"], "student"
    else:
        try:
            lifted = lifted_features({spec.stage: group}, spec.stage, teacher, f"scene '{scene_id}'")  # type: ignore[arg-type]
        except StageInputError as err:
            raise QueryError(str(err)) from None
        features, seen, encoder, label = lifted.features, lifted.seen, lifted.text_encoder, f"{source}/{lifted.teacher}"
    unit = F.normalize(torch.from_numpy(features.astype(np.float32)), dim=-1)
    return SourceFeatures(unit, seen, encoder, label)


def text_similarity(features: SourceFeatures, text: str, embed: TextEmbedder, templates: str = "single") -> np.ndarray:
    """(N,) cosine of each point's feature to ``text`` embedded in the features' space by
    ``embed`` (a ``TextCache``), NaN where unseen."""
    config = TextEncoderConfig(**{**features.text_encoder, "templates": templates})
    query = embed(config, [query_words(text)])[0]
    similarity = (features.unit @ query).numpy()
    return similarity if features.seen is None else np.where(features.seen, similarity, np.nan)


def query_scene(
    store: Store,
    scene_id: str,
    text: str,
    source: str = "fused",
    teacher: str | None = None,
    templates: str = "single",
    device: str = "cpu",
) -> QueryResult:
    """Similarity of each point to ``text``, from the features of ``source`` (a key of
    ``QUERY_SOURCES``); ``teacher`` chooses among a ``project`` group's fused teachers."""
    query_words(text)  # a blank text fails before the features are read
    features = source_features(store, scene_id, source, teacher)
    # TextCache: repeated queries skip the model
    return QueryResult(text_similarity(features, text, TextCache(store, device), templates), features.label)


def write_query_outputs(
    store: Store, scene_id: str, text: str, source: str, teacher: str | None, templates: str, out: Path
) -> tuple[tuple[Path, Path], list[tuple[str, int]]]:
    """The PLY and PNG of a query, and the ground-truth classes of its 100 best points (if labelled)."""
    from ovlift.plots import colormap, query_views
    from ovlift.ply import write_ply

    result = query_scene(store, scene_id, text, source, teacher, templates)
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
        f"{scene_id}: '{text}' ({result.source})",  # the features drawn, as query_scene read them
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
