"""One page's view of a store, and the checks on everything a page sends.

A page is a browser tab: whatever it sends (a scene id, a source, a text, a class) may have
been typed, pasted or crafted, so each value is checked here before it reaches the store or
a model: a scene id must be a safe name (``check_name``) of a scene in the store, a source
one that the scene offers, a text non-empty and at most ``MAX_TEXT`` characters, a class one
of the label set's. A refusal is a ``ViewerError`` whose message the page shows; ``apply``
turns every failure into such a message, so no traceback reaches a page (it goes to the
server's log instead).

``Library`` is what all pages share: the store, each scene's arrays and each source's unit
features (loaded once, the last few kept), and the text embeddings (a dict in front of the
store's ``TextCache``), so that a text's round trip is one matrix-vector product.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ovlift.cache_schema import Store
from ovlift.errors import name_list
from ovlift.models.text import TextEncoderConfig, load_text_encoder
from ovlift.names import UnsafeNameError, check_name
from ovlift.pipeline.text_cache import TextCache
from ovlift.plots import colormap
from ovlift.query import QueryError, SourceFeatures, source_features, text_similarity
from ovlift.viewer.scene_data import MAX_POINTS, NONE, SceneData, load_scene, scene_sources, split_source

MAX_TEXT = 200
"""Longest text a page may query, in characters after stripping (a class name or a short
description; a pasted page of text is refused before it reaches the model)."""
COLOUR_BY = ("RGB", "class", "query")
KEEP_LOADED = 4
"""Scenes, and sources' features, kept in memory between pages' requests."""
log = logging.getLogger("ovlift")


class ViewerError(ValueError):
    """A refusal to show in the page."""


def check_scene_id(scene_id: object, scene_ids: Sequence[str]) -> str:
    try:
        check_name(scene_id, "scene id")
    except UnsafeNameError:
        raise ViewerError(f"not a scene id: {_quote(scene_id)}") from None
    if scene_id not in scene_ids:
        raise ViewerError(f"no scene {_quote(scene_id)} in the store; scenes: {name_list(list(scene_ids))}")
    return str(scene_id)


def check_text(text: object) -> str:
    """``text`` stripped, if it is a text the page may query."""
    if not isinstance(text, str) or not text.strip():
        raise ViewerError("type what to look for first, e.g. 'a soft chair'")
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise ViewerError(f"the text has {len(text)} characters; at most {MAX_TEXT}")
    return text


def check_choice(value: object, options: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in options:
        raise ViewerError(f"no {what} {_quote(value)} here; one of {name_list(list(options))}")
    return value


def _quote(value: object) -> str:
    """A value from the page for a message: a short repr, whatever its length."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


class MemoEmbedder:
    """The store's ``TextCache`` behind a dict: each (encoder, text) is embedded, or even
    looked up in the store, once per server (pages repeat their texts)."""

    def __init__(self, cache: TextCache) -> None:
        self.cache = cache
        self.memory: dict[tuple[TextEncoderConfig, tuple[str, ...]], torch.Tensor] = {}

    def __call__(self, config: TextEncoderConfig, names: Sequence[str]) -> torch.Tensor:
        key = (config, tuple(names))
        if key not in self.memory:
            self.memory[key] = self.cache(config, names)
        return self.memory[key]


class Library:
    """What every page of one server reads: thread-safe (viser runs callbacks in threads)."""

    def __init__(self, store: Store, templates: str = "single", max_points: int = MAX_POINTS) -> None:
        self.store, self.templates, self.max_points = store, templates, max_points
        self.embed = MemoEmbedder(TextCache(store))
        self._scenes: OrderedDict[str, SceneData] = OrderedDict()
        self._features: OrderedDict[tuple[str, str], SourceFeatures] = OrderedDict()
        self._lock = threading.RLock()

    def scene_ids(self) -> list[str]:
        return self.store.scene_ids()

    def default_scene(self) -> str:
        """The first scene with features to query (among the first 20), else the first."""
        ids = self.scene_ids()
        return next((s for s in ids[:20] if scene_sources(self.store, s)), ids[0])

    def warm(self, scene_id: str) -> None:
        """Load a scene, its first source's features and their text encoder before the first
        page asks (the encoder takes seconds to load, a query then milliseconds)."""
        scene = self.scene(scene_id)
        if scene.sources:
            features = self.features(scene_id, scene.sources[0])
            load_text_encoder(TextEncoderConfig(**{**features.text_encoder, "templates": self.templates}))

    def scene(self, scene_id: str) -> SceneData:
        with self._lock:
            return _cached(self._scenes, scene_id, lambda: load_scene(self.store, scene_id, self.max_points))

    def features(self, scene_id: str, source: str) -> SourceFeatures:
        with self._lock:
            return _cached(
                self._features, (scene_id, source), lambda: source_features(self.store, scene_id, *split_source(source))
            )

    def similarity(self, scene: SceneData, source: str, text: str) -> np.ndarray:
        """(n,) cosine of the shown points' ``source`` features to ``text``, NaN where unseen."""
        with self._lock:
            features = self.features(scene.scene_id, source)
            return scene.take(text_similarity(features, text, self.embed, self.templates))


def _cached(cache: OrderedDict, key: Any, load: Callable[[], Any]) -> Any:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache[key] = value = load()
    while len(cache) > KEEP_LOADED:
        cache.popitem(last=False)
    return value


class Session:
    """One page's choices: scene, source, colouring, label set, hidden classes and text."""

    def __init__(self, library: Library, scene_id: str | None = None) -> None:
        self.library = library
        ids = library.scene_ids()
        if not ids:
            raise ViewerError(f"no scenes in {library.store.url}")
        self.source: str | None = None
        self.label_set: str | None = None
        self.colour_by = "RGB"
        self.hidden: set[str] = set()
        self.text: str | None = None
        self.similarity: np.ndarray | None = None
        self.scene = library.scene(check_scene_id(scene_id or library.default_scene(), ids))
        self._adopt_scene()

    def select_scene(self, scene_id: object) -> None:
        self.scene = self.library.scene(check_scene_id(scene_id, self.library.scene_ids()))
        self._adopt_scene()

    def _adopt_scene(self) -> None:
        """Keep the choices the new scene allows; recompute the text's similarity on it."""
        sources, sets = self.scene.sources, self.scene.label_sets
        self.source = self.source if self.source in sources else (sources[0] if sources else None)
        self.label_set = self.label_set if self.label_set in sets else next(iter(sets), None)
        self.similarity = None
        if self.text is not None and self.source is not None:
            self.similarity = self.library.similarity(self.scene, self.source, self.text)
        if self.colour_by == "query" and self.similarity is None:
            self.colour_by = "RGB"
        if self.colour_by == "class" and self.label_set is None:
            self.colour_by = "RGB"

    def select_source(self, source: object) -> None:
        self.source = check_choice(source, self.scene.sources, "source")
        if self.text is not None:
            self.similarity = self.library.similarity(self.scene, self.source, self.text)

    def query(self, text: object) -> None:
        text = check_text(text)
        if self.source is None:
            raise ViewerError(
                f"scene '{self.scene.scene_id}' has no features to query: run the plan's project or predict stage"
            )
        self.similarity = self.library.similarity(self.scene, self.source, text)
        self.text, self.colour_by = text, "query"

    def set_colour_by(self, mode: object) -> None:
        mode = check_choice(mode, COLOUR_BY, "colouring")
        if mode == "query" and self.similarity is None:
            raise ViewerError("type a text and press Query first")
        if mode == "class" and self.label_set is None:
            raise ViewerError(f"scene '{self.scene.scene_id}' has no labels: run the plan's predict stage")
        self.colour_by = mode

    def set_label_set(self, name: object) -> None:
        self.label_set = check_choice(name, list(self.scene.label_sets), "label set")

    def show_class(self, name: object, shown: bool) -> None:
        name = check_choice(name, [c for c, _, _ in self.legend()], "class")
        (self.hidden.discard if shown else self.hidden.add)(name)

    def legend(self) -> list[tuple[str, tuple[int, int, int], int]]:
        """(class, colour, points) of each class the label set gives a shown point, most points first."""
        if self.label_set is None:
            return []
        labels = self.scene.label_sets[self.label_set]
        palette = labels.colours()
        values, first, counts = np.unique(labels.labels, return_index=True, return_counts=True)
        names = [*labels.classes, NONE]
        rows = []
        for value, index, count in zip(values, first, counts):
            r, g, b = (int(c) for c in palette[index])
            rows.append((names[value], (r, g, b), int(count)))
        return sorted(rows, key=lambda row: -row[2])

    def visible(self) -> np.ndarray:
        """(n,) bool: points whose class (in the label set) is not hidden."""
        if self.label_set is None or not self.hidden:
            return np.ones(len(self.scene.points), bool)
        labels = self.scene.label_sets[self.label_set]
        hidden = [i for i, name in enumerate([*labels.classes, NONE]) if name in self.hidden]
        return ~np.isin(np.where(labels.labels < 0, len(labels.classes), labels.labels), hidden)

    def colours(self) -> np.ndarray:
        """(n, 3) uint8 colours of every shown point (hidden ones included)."""
        if self.colour_by == "class" and self.label_set is not None:
            return self.scene.label_sets[self.label_set].colours()
        if self.colour_by == "query" and self.similarity is not None:
            return colormap(self.similarity)
        return self.scene.rgb

    def status(self) -> str:
        """One line on what the page shows."""
        scene = self.scene
        shown = f"{len(scene.points):,}" + (f" of {scene.total:,}" if scene.keep is not None else "")
        line = f"{scene.scene_id}: {shown} points"
        if self.colour_by == "query" and self.similarity is not None:
            finite = self.similarity[np.isfinite(self.similarity)]
            span = f"cosine {finite.min():.2f} (dark) to {finite.max():.2f} (yellow)" if len(finite) else "none seen"
            line += f"; query {self.text!r} on {self.source}: {span}"
        elif self.colour_by == "class":
            line += f"; classes: {self.label_set}"
        return line


def apply(action: Callable[[], object]) -> str | None:
    """Run a page's request; the message to show it if refused or failed, else None."""
    try:
        action()
    except (ViewerError, QueryError) as err:
        return str(err)
    except Exception:  # the page gets a line, the log the traceback
        log.exception("ovlift view: a page's request failed")
        return "the server failed on this request; its log has the details"
    return None
