"""The one place that maps names in a plan to classes.

To add a stage implementation or a dataset reader, write its module and add one
line here (a 2D teacher: one line in ``ovlift.models.teachers.registry``). Each
class carries its typed ``Config``, so a plan entry is validated against a real
type and "go to definition" leads to the code.
"""

from __future__ import annotations

from ovlift.config import FrozenConfig
from ovlift.datasets.base import Dataset
from ovlift.datasets.matterport import MatterportDataset
from ovlift.datasets.nuscenes import NuScenesDataset
from ovlift.datasets.nuscenes_sample import NuScenesSampleDataset
from ovlift.datasets.openscene import OpenSceneDataset
from ovlift.datasets.rgbd_folder import RGBDFolderDataset
from ovlift.datasets.s3dis import S3DISDataset
from ovlift.datasets.scannet import ScanNetDataset
from ovlift.datasets.toy import ToyDataset
from ovlift.datasets.toy_street import ToyStreetDataset
from ovlift.models.generators.registry import GENERATORS
from ovlift.models.teachers.registry import RENAMED, TEACHERS
from ovlift.stages.base import Stage
from ovlift.stages.capability import CapabilityStage
from ovlift.stages.denoise import DenoiseStage
from ovlift.stages.distill import DistillStage
from ovlift.stages.distill_clip2scene import Clip2SceneDistillStage
from ovlift.stages.evaluate import EvaluateStage
from ovlift.stages.extract2d import Extract2DStage
from ovlift.stages.fuse import FuseStage
from ovlift.stages.input import InputStage
from ovlift.stages.objects import ObjectsStage
from ovlift.stages.predict import PredictStage
from ovlift.stages.project import ProjectStage
from ovlift.stages.project_released import ReleasedFeaturesStage
from ovlift.stages.segment import SegmentStage

STAGES: dict[str, dict[str, type[Stage]]] = {
    "input": {"canonical": InputStage},
    "extract2d": dict.fromkeys(TEACHERS, Extract2DStage),  # one stage class; the implementations are teachers
    "project": {"openscene": ProjectStage, "released": ReleasedFeaturesStage},
    "segment": {"scannet": SegmentStage},
    "objects": {"cus3d": ObjectsStage},
    "capability": dict.fromkeys(GENERATORS, CapabilityStage),  # one stage class; the implementations are generators
    "denoise": {"cus3d": DenoiseStage},
    "fuse": {"sas": FuseStage},
    "distill": {"openscene": DistillStage, "clip2scene": Clip2SceneDistillStage},
    "predict": {"openscene": PredictStage},
    "evaluate": {"scannet": EvaluateStage},
}
"""stage name -> implementation name -> class; the first implementation is the default."""

RENAMED_IMPLEMENTATIONS: dict[str, dict[str, str]] = {"extract2d": RENAMED}
"""stage name -> old implementation name -> current name (accepted with a warning)."""

DATASETS: dict[str, type[Dataset]] = {
    "toy": ToyDataset,
    "rgbd-folder": RGBDFolderDataset,
    "toy-street": ToyStreetDataset,
    "nuscenes": NuScenesDataset,
    "nuscenes-sample": NuScenesSampleDataset,
    "scannet": ScanNetDataset,
    "matterport3d": MatterportDataset,
    "s3dis": S3DISDataset,
    "openscene": OpenSceneDataset,
}


def stage_class(stage: str, implementation: str | None = None) -> tuple[type[Stage], type[FrozenConfig], str]:
    """The class of a stage implementation, the Config its plan entry is validated
    against, and the implementation's current name (an old name resolves to it)."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage '{stage}'; known stages: {list(STAGES)}")
    impls = STAGES[stage]
    current = implementation or next(iter(impls))
    current = RENAMED_IMPLEMENTATIONS.get(stage, {}).get(current, current)
    if current not in impls:
        raise KeyError(f"stage '{stage}' has no implementation '{implementation}'; known: {list(impls)}")
    cls = impls[current]
    return cls, cls.config_type(current), current


def dataset_class(name: str) -> type[Dataset]:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset '{name}'; known datasets: {list(DATASETS)}")
    return DATASETS[name]


def stage_classes(stage: str) -> list[type[Stage]]:
    """The distinct classes of a stage's implementations."""
    return list(dict.fromkeys(STAGES[stage].values()))


def stage_order() -> list[str]:
    """Stage names upstream-first (a topological order of ``reads``). An optional read of
    a stage that is not registered (yet) is left out: no plan can configure it."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ValueError(f"stage dependency cycle: {' -> '.join(path + (name,))}")
        classes = stage_classes(name)
        required = {r for cls in classes for r in cls.reads}
        optional = {r for cls in classes for r in cls.optional_reads if r in STAGES}
        for upstream in sorted(required | optional):
            visit(upstream, path + (name,))
        order.append(name)

    for name in STAGES:
        visit(name, ())
    return order
