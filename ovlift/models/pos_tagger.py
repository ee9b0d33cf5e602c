"""nltk's averaged perceptron part-of-speech tagger, loaded from a local folder.

nltk publishes the English tagger as the data package ``averaged_perceptron_tagger_eng``:
a folder of three JSON files (``averaged_perceptron_tagger_eng.{weights,tagdict,classes}.json``)
that ``nltk.download`` puts under ``<nltk_data>/taggers/``. No registry serves it, so, like
every model here, it is read from a path the plan names, never downloaded. nltk's own
loader only reads inside its data roots (``nltk.data.path``, a sandbox), so we read the
three files ourselves and hand them to nltk's ``decode_json_params``; ``save_tagger``
writes what nltk's ``encode_json_obj`` gives under nltk's file names, so a tagger saved
here loads in nltk and the other way round.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ovlift.models.loading import ModelLoadError

if TYPE_CHECKING:
    from nltk.tag.perceptron import PerceptronTagger

PACKAGE = "averaged_perceptron_tagger_eng"
LANG = "eng"
PARTS = ("weights", "tagdict", "classes")
TAGGER_EXPECTED = (
    f"nltk's {PACKAGE} data package: a folder with {PACKAGE}.weights.json, .tagdict.json and .classes.json, "
    f"the folder holding it, or an nltk_data folder with taggers/{PACKAGE}/"
)


def tagger_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The three JSON files of a tagger in ``folder``, as nltk names them."""
    return [Path(folder) / f"{PACKAGE}.{part}.json" for part in PARTS]


def tagger_folder_in(path: str | os.PathLike[str], what: str) -> Path:
    """The folder that holds the tagger's files: ``path`` itself, ``path/averaged_perceptron_tagger_eng``
    or ``path/taggers/averaged_perceptron_tagger_eng`` (an nltk_data folder)."""
    root = Path(path)
    if not root.is_dir():
        raise ModelLoadError(f"{what}: tagger directory '{root}' does not exist (expected {TAGGER_EXPECTED})")
    for folder in (root, root / PACKAGE, root / "taggers" / PACKAGE):
        if all(f.is_file() for f in tagger_files(folder)):
            return folder
    missing = [f.name for f in tagger_files(root) if not f.is_file()]
    raise ModelLoadError(f"{what}: '{root}' has no {', '.join(missing)} (expected {TAGGER_EXPECTED})")


def load_tagger(path: str | os.PathLike[str], what: str) -> PerceptronTagger:
    """The tagger in ``path`` (see ``tagger_folder_in``); one ``ModelLoadError`` naming the file
    when one is not JSON of the shape nltk writes."""
    return _load_tagger(str(tagger_folder_in(path, what)), what)


@lru_cache(maxsize=2)
def _load_tagger(folder: str, what: str) -> PerceptronTagger:
    from nltk.tag.perceptron import PerceptronTagger

    params = []
    for file, check in zip(tagger_files(folder), (_is_weights, _is_tagdict, _is_classes)):
        try:
            value = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{what}: cannot read '{file}' as JSON ({err}) (expected {TAGGER_EXPECTED})") from None
        if not check(value):
            raise ModelLoadError(f"{what}: '{file}' is not {check.__doc__} (expected {TAGGER_EXPECTED})")
        params.append(value)
    tagger = PerceptronTagger(load=False)
    tagger.decode_json_params(params)
    return tagger


def _is_weights(value: object) -> bool:
    """a mapping feature -> {tag: weight}"""
    return isinstance(value, dict) and all(
        isinstance(w, dict) and all(isinstance(t, str) and isinstance(x, int | float) for t, x in w.items())
        for w in value.values()
    )


def _is_tagdict(value: object) -> bool:
    """a mapping word -> tag"""
    return isinstance(value, dict) and all(isinstance(t, str) for t in value.values())


def _is_classes(value: object) -> bool:
    """a non-empty list of tags"""
    return isinstance(value, list) and bool(value) and all(isinstance(t, str) for t in value)


def save_tagger(tagger: PerceptronTagger, folder: str | os.PathLike[str]) -> Path:
    """Write ``tagger`` to ``folder`` in nltk's layout (what ``load_tagger`` reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for file, value in zip(tagger_files(folder), tagger.encode_json_obj()):
        file.write_text(json.dumps(value), encoding="utf-8")
    return folder


def train_tagger(sentences: Sequence[Sequence[tuple[str, str]]], iterations: int = 10, seed: int = 0):
    """A perceptron tagger trained on hand-tagged ``sentences`` that tags each of them exactly
    as given (tests and toy plans: a tiny stand-in for nltk's English tagger).

    Training shuffles with ``seed`` (the global ``random`` state is restored after). Words
    that always take one tag go in the tag dictionary, as nltk's own training does for
    frequent words; a sentence still tagged otherwise after training is an error.
    """
    from nltk.tag.perceptron import PerceptronTagger

    sentences = [list(s) for s in sentences]
    state = random.getstate()
    random.seed(seed)
    try:
        tagger = PerceptronTagger(load=False)
        tagger.train(sentences, nr_iter=iterations)
    finally:
        random.setstate(state)
    tags: dict[str, set[str]] = {}
    for word, tag in (pair for s in sentences for pair in s):
        tags.setdefault(word, set()).add(tag)
    tagger.tagdict.update({w: next(iter(t)) for w, t in tags.items() if len(t) == 1})
    for sentence in sentences:
        words = [w for w, _ in sentence]
        if tagger.tag(words) != [tuple(p) for p in sentence]:
            raise ValueError(f"the trained tagger tags {words} as {tagger.tag(words)}, not {sentence}")
    return tagger
