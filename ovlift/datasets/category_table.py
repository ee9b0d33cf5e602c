"""ScanNet's raw-category table, ``scannetv2-labels.combined.tsv``.

ScanNet and Matterport3D annotate objects with free-text raw categories ("office
chair", "kitchen cabinets"); every benchmark label set is reached through this one
table: ``nyu40id`` (NYU40, and ScanNet-20 as a subset of it), ``id`` (the raw
category id that ScanNet-200 selects from) and ``mpcat40index`` (Matterport's 40
categories). ScanNet ships it at the top of the dataset; a copy is in
``../shared/data/scannet-meta``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovlift.cache_schema import IGNORE_LABEL

REQUIRED_COLUMNS = ("id", "raw_category", "nyu40id", "mpcat40index")


@dataclass(frozen=True)
class CategoryTable:
    path: Path
    rows: dict[str, dict[str, str]]
    """raw_category -> the row (column -> text)."""

    @classmethod
    def read(cls, path: str | Path) -> CategoryTable:
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f, delimiter="\t")
                missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
                if missing:
                    raise ValueError(
                        f"{path}: expected ScanNet's label table with columns {list(REQUIRED_COLUMNS)}; "
                        f"missing {missing} (found {reader.fieldnames})"
                    )
                rows = {row["raw_category"]: row for row in reader}
        except OSError as err:
            raise FileNotFoundError(f"cannot read ScanNet's label table '{path}': {err}") from None
        return cls(path, rows)

    def lookup(self, raw_categories: Sequence[str], column: str) -> np.ndarray:
        """(len(raw_categories),) int64 values of ``column`` per raw category; 0 (ScanNet's
        "unannotated") for a category the table lacks or a blank cell."""
        out = np.zeros(len(raw_categories), np.int64)
        for i, name in enumerate(raw_categories):
            row = self.rows.get(name)
            if row is None:
                continue
            if column not in row:
                raise KeyError(f"{self.path}: no column '{column}' (columns: {list(row)})")
            text = row[column].strip()
            out[i] = int(text) if text else 0
        return out


def label_indices(ids: np.ndarray, valid_ids: Sequence[int]) -> np.ndarray:
    """int16 index of each id in ``valid_ids`` (a label set's class ids, in class order);
    ``IGNORE_LABEL`` for ids outside the set (ScanNet's rule: not evaluated)."""
    lut = np.full(max(int(np.max(ids, initial=0)), max(valid_ids)) + 1, IGNORE_LABEL, np.int16)
    lut[np.asarray(valid_ids)] = np.arange(len(valid_ids), dtype=np.int16)
    return lut[np.asarray(ids)]
