"""Named, versioned class lists (label sets and text-query vocabularies)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vocabulary:
    name: str
    version: str
    classes: tuple[str, ...]
    """Class names; a label value is an index into this tuple."""

    def index(self, class_name: str) -> int:
        return self.classes.index(class_name)


SCANNET20 = Vocabulary(
    "scannet20",
    "1",
    (
        "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
        "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
        "bathtub", "otherfurniture",
    ),
)

VOCABULARIES: dict[str, Vocabulary] = {v.name: v for v in (SCANNET20,)}


def get_vocabulary(name: str) -> Vocabulary:
    try:
        return VOCABULARIES[name]
    except KeyError:
        raise KeyError(f"unknown vocabulary '{name}'; known: {sorted(VOCABULARIES)}") from None
