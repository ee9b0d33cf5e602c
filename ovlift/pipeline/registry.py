"""The one place that maps names in a plan to classes.

To add a stage implementation or a dataset reader, write its module and add one
line here. Each class carries its typed ``Config``, so a plan entry is validated
against a real type and "go to definition" leads to the code.
"""

from __future__ import annotations

from ovlift.datasets.base import Dataset
from ovlift.datasets.rgbd_folder import RGBDFolderDataset
from ovlift.datasets.toy import ToyDataset
from ovlift.stages.base import Stage
from ovlift.stages.distill import DistillStage
from ovlift.stages.evaluate import EvaluateStage
from ovlift.stages.extract2d import (
    CachedExtract,
    CaptionAlignedExtract,
    MaskClipCropExtract,
    MaskCLIPExtract,
    SyntheticExtract,
)
from ovlift.stages.input import InputStage
from ovlift.stages.predict import PredictStage
from ovlift.stages.project import ProjectStage

STAGES: dict[str, dict[str, type[Stage]]] = {
    "input": {"canonical": InputStage},
    "extract2d": {
        "synthetic": SyntheticExtract,
        "maskclip": MaskCLIPExtract,
        "mask-clip": MaskClipCropExtract,
        "caption-aligned": CaptionAlignedExtract,
        "cached": CachedExtract,
    },
    "project": {"openscene": ProjectStage},
    "distill": {"openscene": DistillStage},
    "predict": {"openscene": PredictStage},
    "evaluate": {"scannet": EvaluateStage},
}
"""stage name -> implementation name -> class; the first implementation is the default."""

DATASETS: dict[str, type[Dataset]] = {
    "toy": ToyDataset,
    "rgbd-folder": RGBDFolderDataset,
}


def stage_class(stage: str, implementation: str | None = None) -> type[Stage]:
    if stage not in STAGES:
        raise KeyError(f"unknown stage '{stage}'; known stages: {list(STAGES)}")
    impls = STAGES[stage]
    if implementation is None:
        return next(iter(impls.values()))
    if implementation not in impls:
        raise KeyError(f"stage '{stage}' has no implementation '{implementation}'; known: {list(impls)}")
    return impls[implementation]


def dataset_class(name: str) -> type[Dataset]:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset '{name}'; known datasets: {list(DATASETS)}")
    return DATASETS[name]


def stage_order() -> list[str]:
    """Stage names upstream-first (a topological order of ``reads``)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ValueError(f"stage dependency cycle: {' -> '.join(path + (name,))}")
        for upstream in {r for cls in STAGES[name].values() for r in cls.reads + cls.optional_reads}:
            visit(upstream, path + (name,))
        order.append(name)

    for name in STAGES:
        visit(name, ())
    return order
