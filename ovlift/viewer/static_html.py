"""``ovlift view --html OUT.html``: one scene as a single self-contained HTML file, to share.

The file holds the points (a seeded random ``MAX_POINTS`` where the scene has more), their
RGB, every label set's classes and, for each class of the vocabulary, each point's cosine
similarity to the class name under one feature source; a few hundred lines of plain
JavaScript draw them on a 2D canvas (drag to orbit, wheel to zoom) and a menu picks the
colouring. Nothing is fetched: no script, style, font or image comes from anywhere but the
file, so it opens from a mail attachment or a laptop without a network. (viser can record a
scene, but its recordings play back in viser's client, which the file would have to fetch.)

Sizes: positions as 16-bit steps of the scene's bounding box, labels 16-bit, each
similarity as 8 bits over its own range; 100,000 points and 20 classes make about 5 MB.
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib import resources
from pathlib import Path

import matplotlib
import numpy as np

from ovlift.atomic_files import write_atomically
from ovlift.cache_schema import Store
from ovlift.plots import class_palette
from ovlift.query import QueryError, SourceFeatures, text_similarity
from ovlift.viewer.scene_data import NONE, SceneData
from ovlift.viewer.session import Library, check_choice, check_scene_id

MAX_POINTS = 100_000
"""Points a file holds at most: enough to read a room's layout, and a file that mails (~5 MB)."""
UNSEEN = 255
"""Similarity byte of points without a feature."""


def write_html(
    store: Store, out: Path, scene_id: str | None = None, source: str | None = None, max_points: int = MAX_POINTS
) -> Path:
    """Write ``scene_id`` (or the store's only scene) to ``out`` with the vocabulary's
    similarities under ``source`` (default: the scene's first, the student where present)."""
    library = Library(store, max_points=max_points)
    ids = library.scene_ids()
    if scene_id is None:
        if len(ids) != 1:
            raise QueryError(f"the store holds {len(ids)} scenes: name one with --scene")
        scene_id = ids[0]
    scene = library.scene(check_scene_id(scene_id, ids))
    data = scene_payload(scene)
    if scene.vocabulary and scene.sources:
        source = check_choice(source or scene.sources[0], scene.sources, "source")
        features = library.features(scene.scene_id, source)
        data["similarity"] = similarity_payload(scene, features, library)
    elif source is not None:
        raise QueryError(f"scene '{scene.scene_id}' has no features or no vocabulary to compare '{source}' with")
    page = render(data)
    return write_atomically(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).decode()


def scene_payload(scene: SceneData) -> dict:
    """Points, RGB and label sets as the page's script reads them."""
    points = scene.points.astype(np.float64)
    lo, hi = (points.min(axis=0), points.max(axis=0)) if len(points) else (np.zeros(3), np.ones(3))
    steps = np.round((points - lo) / np.maximum(hi - lo, 1e-9) * 65535).astype(np.uint16)
    label_sets = {
        name: {
            "classes": [*labels.classes, NONE],
            "colours": np.vstack([class_palette(labels.classes), [[150, 150, 150]]]).tolist(),
            "labels": _b64(np.where(labels.labels < 0, len(labels.classes), labels.labels).astype(np.uint16)),
        }
        for name, labels in scene.label_sets.items()
    }
    viridis = (matplotlib.colormaps["viridis"](np.linspace(0, 1, 255))[:, :3] * 255).round().astype(np.uint8)
    return {
        "scene": scene.scene_id,
        "count": len(points),
        "total": scene.total,
        "box": [lo.tolist(), hi.tolist()],
        "points": _b64(steps),
        "rgb": _b64(scene.rgb.astype(np.uint8)),
        "labelSets": label_sets,
        "viridis": _b64(viridis),
    }


def similarity_payload(scene: SceneData, features: SourceFeatures, library: Library) -> dict:
    """Each vocabulary class's cosine per point, as bytes over the class's own range."""
    classes = []
    for name in scene.vocabulary:
        values = scene.take(text_similarity(features, name, library.embed, library.templates))
        finite = np.isfinite(values)
        lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 1.0)
        scaled = np.round((np.nan_to_num(values, nan=lo) - lo) / max(hi - lo, 1e-9) * (UNSEEN - 1))
        codes = np.where(finite, scaled, UNSEEN).astype(np.uint8)
        classes.append({"name": name, "range": [lo, hi], "values": _b64(codes)})
    return {"source": features.label, "classes": classes}


def render(data: dict) -> str:
    """The page: the template with the data inlined. Every ``<``, ``>`` and ``&`` of the JSON is
    a ``\\u`` escape, so no name can end or confuse the script block (``</script>``, ``<!--``);
    both placeholders are filled in one pass, so a name holding one is never filled in."""
    template = resources.files("ovlift.viewer").joinpath("static_page.html").read_text()
    payload = json.dumps(data, separators=(",", ":"))
    for char in "<>&":
        payload = payload.replace(char, f"\\u{ord(char):04x}")
    fills = {"__TITLE__": html.escape(f"ovlift: {data['scene']}"), "__DATA__": payload}
    return re.sub("__TITLE__|__DATA__", lambda m: fills[m.group(0)], template)
