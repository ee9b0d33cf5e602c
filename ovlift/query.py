"""Text queries against a scene's per-point features (fused 2D teacher features).

The query names a thing ("a soft chair"); a leading article is dropped and the
rest goes through the same templates as class names, so queries and classes are
embedded alike. Similarity is the cosine between that embedding and each point's
feature; points no view saw get NaN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ovlift.cache_schema import Store, scene_group_path
from ovlift.models.text import TextEncoderConfig, load_text_encoder


class QueryError(ValueError):
    pass


@dataclass
class QueryResult:
    similarity: np.ndarray
    """(N,) cosine similarity per point, NaN where unseen."""
    source: str
    """Which features answered, e.g. ``fused/teacher_a``."""


def query_scene(
    store: Store, scene_id: str, text: str, teacher: str | None = None, templates: str = "single", device: str = "cpu"
) -> QueryResult:
    group = store.read(scene_group_path(scene_id, "project"))
    if group is None:
        raise QueryError(f"scene '{scene_id}': no complete 'project' group in {store.url}; run the plan first")
    teachers = group.info.get("teachers", {})
    if not teachers:
        raise QueryError(f"scene '{scene_id}': the project group fused no teacher features")
    if teacher is None:
        if len(teachers) > 1:
            raise QueryError(f"scene '{scene_id}': several teachers {sorted(teachers)}; choose one")
        teacher = next(iter(teachers))
    if teacher not in teachers:
        raise QueryError(f"scene '{scene_id}': no teacher '{teacher}'; fused teachers: {sorted(teachers)}")
    encoder_config = TextEncoderConfig(**{**teachers[teacher]["text_encoder"], "templates": templates})
    name = re.sub(r"^(a|an|the)\s+", "", text.strip(), flags=re.IGNORECASE)
    query = load_text_encoder(encoder_config, device).embed_names([name])[0]
    features = torch.from_numpy(group.load(f"fused/{teacher}/features").astype(np.float32))
    similarity = F.normalize(features, dim=-1) @ query
    seen = group.load(f"fused/{teacher}/seen")
    return QueryResult(np.where(seen, similarity.numpy(), np.nan), f"fused/{teacher}")
