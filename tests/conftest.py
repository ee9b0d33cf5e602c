import os
from pathlib import Path

import numpy as np
import pytest

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


def tiny_pipeline_plan(path: Path, epochs: int = 6, num_scenes: int = 3) -> Path:
    """A whole plan (teacher to evaluation) on tiny toy scenes; the last scene is held out."""
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
            "distill": {"student": TINY_STUDENT, "epochs": epochs, "batch_size": 1, "lr": 0.003, "label_weight": 0.5},
            "predict": {},
            "evaluate": {"unseen_classes": ["table", "chair"]},
        }
    )
    path.write_text(yaml.safe_dump(data))
    return path
