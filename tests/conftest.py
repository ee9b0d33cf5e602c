import os
from pathlib import Path

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


@pytest.fixture(autouse=True)
def _prefect_home(tmp_path_factory, monkeypatch):
    """Keep Prefect's database out of the home directory."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path_factory.getbasetemp() / "prefect"))
