"""ScanNet's raw-category table, ``scannetv2-labels.combined.tsv``.

ScanNet and Matterport3D annotate objects with free-text raw categories ("office
chair", "kitchen cabinets"); every benchmark label set is reached through this one
table: ``nyu40id`` (NYU40, and ScanNet-20 as a subset of it), ``id`` (the raw
category id that ScanNet-200 selects from) and ``mpcat40index`` (Matterport's 40
categories). ScanNet ships it at the top of the dataset; a copy is in
``../shared/data/scannet-meta``.

Matterport3D's ``metadata/category_mapping.tsv`` has the same columns with ``index``
in place of ``id``; its rows are what the ``category_id`` of a region mesh's faces
counts (1-based), so both tables are read here, and ``id_column`` says which one it is.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovlift.cache_schema import IGNORE_LABEL

REQUIRED_COLUMNS = ("raw_category", "nyu40id", "mpcat40index")
ID_COLUMNS = ("id", "index")
"""ScanNet's raw-category id; Matterport's row number (what face ``category_id`` holds)."""


@dataclass(frozen=True)
class CategoryTable:
    path: Path
    rows: dict[str, dict[str, str]]
    """raw_category -> the row (column -> text)."""
    id_column: str = "id"
    """``id`` (ScanNet's table) or ``index`` (Matterport's ``category_mapping.tsv``)."""
    by_id: dict[int, dict[str, str]] = field(default_factory=dict)
    """The id column's value -> its first row (ScanNet repeats an id for variants of one
    category, e.g. 'chair' and 'stack of chairs'; Matterport's index is unique)."""

    @classmethod
    def read(cls, path: str | Path) -> CategoryTable:
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f, delimiter="\t")
                found = reader.fieldnames or ()
                missing = [c for c in REQUIRED_COLUMNS if c not in found]
                id_column = next((c for c in ID_COLUMNS if c in found), None)
                if missing or id_column is None:
                    raise ValueError(
                        f"{path}: expected ScanNet's label table (or Matterport's category_mapping.tsv) with "
                        f"columns {list(REQUIRED_COLUMNS)} and one of {list(ID_COLUMNS)}; "
                        f"missing {missing or list(ID_COLUMNS)} (found {reader.fieldnames})"
                    )
                table = list(reader)
        except OSError as err:
            raise FileNotFoundError(f"cannot read ScanNet's label table '{path}': {err}") from None
        by_id = {}
        for line, row in enumerate(table, start=2):
            try:
                by_id.setdefault(int(row[id_column]), row)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}, line {line}: expected an integer {id_column}, found {row[id_column]!r}"
                ) from None
        return cls(path, {row["raw_category"]: row for row in table}, id_column, by_id)

    def lookup(self, raw_categories: Sequence[str], column: str) -> np.ndarray:
        """(len(raw_categories),) int64 values of ``column`` per raw category; 0 (ScanNet's
        "unannotated") for a category the table lacks or a blank cell."""
        texts = self.text([self.rows.get(name) for name in raw_categories], column)
        return np.array([int(t) if t else 0 for t in texts], np.int64)

    def rows_of_ids(self, ids: Sequence[int]) -> list[dict[str, str] | None]:
        """The row of each value of the id column (None for an id the table lacks)."""
        return [self.by_id.get(int(i)) for i in ids]

    def text(self, rows: Sequence[dict[str, str] | None], column: str) -> list[str]:
        """``column`` of each row, stripped; "" for a missing row or a blank cell."""
        out = []
        for row in rows:
            if row is not None and column not in row:
                raise KeyError(f"{self.path}: no column '{column}' (columns: {list(row)})")
            out.append((row[column] or "").strip() if row is not None else "")
        return out


def label_indices(ids: np.ndarray, valid_ids: Sequence[int]) -> np.ndarray:
    """int16 index of each id in ``valid_ids`` (a label set's class ids, in class order);
    ``IGNORE_LABEL`` for ids outside the set (ScanNet's rule: not evaluated)."""
    lut = np.full(max(int(np.max(ids, initial=0)), max(valid_ids)) + 1, IGNORE_LABEL, np.int16)
    lut[np.asarray(valid_ids)] = np.arange(len(valid_ids), dtype=np.int16)
    return lut[np.asarray(ids)]
