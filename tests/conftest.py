from __future__ import annotations

import os

if "PYTEST_XDIST_WORKER" in os.environ:  # make test's two workers on two cores: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from ovlift.datasets.base import Dataset, Frame, SceneSource

if TYPE_CHECKING:
    from ovlift.pipeline.plan import Plan

os.environ.setdefault("OVLIFT_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real sample data not found at {path} (see ../shared/data/README.md)")
    return path


def toy_plan_dict(store, **dataset) -> dict:
    """A plan over small toy scenes (fast enough for many test runs)."""
    toy = {"name": "toy", "num_scenes": 2, "num_frames": 4, "image_height": 60, "image_width": 80}
    toy.update(dataset)
    return {"store": str(store), "dataset": toy, "stages": {"input": {}}}


def scene_truth(scene, classes: list[str]) -> np.ndarray:
    """A scene's labels as indices into ``classes``, matched by name (-1: unlabelled or not among them)."""
    names = [*scene.info["class_names"], "none"]  # label -1 reads the last
    return np.array([classes.index(n) if n in classes else -1 for n in names])[scene.load("labels")]


def scannet_miou(truth: np.ndarray, predicted: np.ndarray, k: int) -> float:
    """ScanNet's rule, class by class: a class counts where it is true or predicted on a labelled
    point (predicted but absent: IoU 0); points labelled -1 are not scored."""
    scored = truth >= 0
    ious = []
    for c in range(k):
        true, guessed = scored & (truth == c), scored & (predicted == c)
        if (true | guessed).any():
            ious.append((true & guessed).sum() / (true | guessed).sum())
    return float(np.mean(ious))


@pytest.fixture(params=["native", "torch"])
def kernel_backend(request, monkeypatch):
    """A test of the projection and fusion kernels, run on the C++ CPU loops and on the torch ops
    that stand in for them on CUDA and where no compiler is found. The C++ ones must build,
    unless ``OVLIFT_NATIVE=0`` switches them off."""
    from ovlift.kernels import native

    if request.param == "torch":
        monkeypatch.setattr(native, "available", lambda device: False)
    elif os.environ.get("OVLIFT_NATIVE") == "0":
        pytest.skip("OVLIFT_NATIVE=0 switches the C++ kernels off")
    else:
        assert native.available("cpu"), "the C++ CPU kernels did not build (see the warning above)"
    return request.param


@pytest.fixture(autouse=True)
def _prefect_home(tmp_path_factory, monkeypatch):
    """Keep Prefect's database and the file digest cache out of the home directory."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path_factory.getbasetemp() / "prefect"))
    monkeypatch.setenv("OVLIFT_HASH_CACHE", str(tmp_path_factory.getbasetemp() / "file-digests.sqlite"))


TINY_STUDENT = {
    "planes": [8, 16, 16, 16, 16, 16, 8, 8],
    "layers": [1] * 8,
    "init_dim": 8,
    "stem_kernel": 3,
    "voxel_size_m": 0.1,
}


def tiny_pipeline_plan(path: Path, epochs: int = 6, num_scenes: int = 3, **distill) -> Path:
    """A whole plan (teacher to evaluation) on tiny toy scenes; the last scene is held out
    (``distill``: more fields of the distill stage)."""
    import yaml

    data = toy_plan_dict(
        path.parent / f"{path.stem}.zarr",
        num_scenes=num_scenes,
        num_frames=4,
        image_height=48,
        image_width=64,
        vertex_spacing_m=0.1,
    )
    scenes = [f"toy_{i:04d}" for i in range(num_scenes)]
    data["splits"] = {"train": scenes[:-1], "val": scenes[-1:]}
    data["stages"].update(
        {
            "extract2d": {
                "t": {"implementation": "synthetic", "feature_height": 48, "feature_width": 64, "noise_std": 0.2}
            },
            "project": {"cut_bound": 1},
            "distill": {
                "student": TINY_STUDENT,
                "epochs": epochs,
                "batch_size": 1,
                "lr": 0.003,
                "label_weight": 0.5,
                **distill,
            },
            "predict": {},
            "evaluate": {"unseen_classes": ["table", "chair"]},
        }
    )
    path.write_text(yaml.safe_dump(data))
    return path


class _WithoutGroundTruth(Dataset):
    """``without_ground_truth``'s reader (see there)."""

    def __init__(self, source: Dataset) -> None:
        super().__init__(source.config)
        self.source = source
        self.name = source.name  # type: ignore[misc]  # the input stage records the dataset's name

    def scene_ids(self) -> list[str]:
        return self.source.scene_ids()

    def named_splits(self) -> dict[str, list[str]]:
        return self.source.named_splits()

    def fingerprint(self, scene_id: str) -> str:  # other content, other fingerprint
        return hashlib.sha256(f"without ground truth/{self.source.fingerprint(scene_id)}".encode()).hexdigest()

    def load(self, scene_id: str) -> SceneSource:
        scene = self.source.load(scene_id)

        def read_frame(index: int) -> Frame:
            return replace(scene.read_frame(index), labels=None, instances=None)

        return replace(scene, labels=None, instances=None, class_names=None, read_frame=read_frame)


def without_ground_truth(dataset: Dataset) -> Dataset:
    """``dataset``'s scenes with every ground-truth array dropped before ``input`` sees them: the
    points' labels and instances, each frame's label and instance images, and the label set's
    class names (nothing downstream can then name a class by its index)."""
    return _WithoutGroundTruth(dataset)


def plan_without_ground_truth(plan: Plan) -> Plan:
    """``plan`` on ``without_ground_truth`` of its dataset."""
    return replace(plan, dataset=without_ground_truth(plan.dataset))


TEACHER_ROOMS = {"name": "toy", "num_frames": 4, "image_height": 48, "image_width": 64, "vertex_spacing_m": 0.3}
TINY_TEACHER = {
    "folder": "models/tiny",
    "pool": [{**TEACHER_ROOMS, "seed": 9000, "num_scenes": 3}],
    "validation": {**TEACHER_ROOMS, "seed": 9500, "num_scenes": 2},
    "network": {"widths": [8, 16, 32], "input": "rgbd", "input_height": 24, "input_width": 32},
    # On textured rooms (appearance v3) 60 steps on two rooms stayed below the majority class
    # held out; 300 steps on three reach ~70 % against a 51 % majority, in a few seconds.
    "steps": 300,
    "batch_size": 4,
    "lr": 0.01,
    "final_lr": 0.001,
    "temperature": 0.1,
}
"""A tiny indoor teacher (ScanNet-20) of the ``trained`` kind, trained in seconds."""

STREET_ROOMS = {"name": "toy-street", "num_sweeps": 0, "azimuth_steps": 8, "image_height": 45, "image_width": 80}
TINY_STREET_TEACHER = {
    "folder": "models/street",
    "vocabulary": "clip2scene-nuscenes16",
    "pool": [{**STREET_ROOMS, "seed": 9000, "num_scenes": 3}],
    "validation": {**STREET_ROOMS, "seed": 9500, "num_scenes": 1},
    "network": {"widths": [8, 16, 32], "input": "rgb", "input_height": 24, "input_width": 40},
    "steps": 150,
    "batch_size": 4,
    "lr": 0.01,
    "final_lr": 0.001,
    "temperature": 0.1,
}
"""A tiny camera teacher of toy streets (CLIP2Scene's nuScenes-16), trained in seconds."""


def write_teacher_spec(folder: Path, name: str = "tiny", entry: dict | None = None, **changes) -> Path:
    """A teacher spec in ``folder`` with one entry (``TINY_TEACHER`` by default) changed by ``changes``."""
    import yaml

    path = folder / "teachers.yaml"
    path.write_text(yaml.safe_dump({"teachers": {name: {**(entry or TINY_TEACHER), **changes}}}))
    return path


def train_on_one_thread(spec: Path) -> dict[str, str]:
    """``train_teachers(spec)`` with torch on one thread (the same weights on any machine's core count)."""
    import torch

    from ovlift.pipeline.train_teachers import train_teachers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_teachers(spec, echo=lambda _: None)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``TINY_TEACHER`` trained through the spec command: (spec path, model folder, outcome)."""
    root = tmp_path_factory.mktemp("teachers")
    spec = write_teacher_spec(root)
    outcome = train_on_one_thread(spec)
    return spec, root / "models" / "tiny", outcome


@pytest.fixture(scope="session")
def trained_street(tmp_path_factory):
    """``TINY_STREET_TEACHER``'s model folder, trained through the spec command."""
    root = tmp_path_factory.mktemp("street-teacher")
    assert train_on_one_thread(write_teacher_spec(root, "street", TINY_STREET_TEACHER)) == {"street": "trained"}
    return root / "models" / "street"
