"""Names confined: scene ids, variants and file names from datasets, plans and the command
line can never address a path outside the store or the dataset's folder."""

import hashlib
import json

import pytest
from conftest import shared_data, toy_plan_dict
from typer.testing import CliRunner

from ovlift.cache_schema.groups.input import INPUT_SPEC
from ovlift.datasets.base import Dataset
from ovlift.names import UnsafeNameError, check_name, contained
from ovlift.pipeline.cli import app
from ovlift.pipeline.plan import Plan, plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.stages.capability import capability_scene


class Renamed(Dataset):
    """A dataset whose reader gives one scene a hostile id (as a nuScenes scene.json name could)."""

    def __init__(self, source: Dataset, hostile: str) -> None:
        super().__init__(source.config)
        self.source, self.hostile = source, hostile
        self.name = source.name  # type: ignore[misc]

    def scene_ids(self) -> list[str]:
        return [self.hostile]

    def fingerprint(self, scene_id: str) -> str:
        return hashlib.sha256(self.source.fingerprint("toy_0000").encode()).hexdigest()

    def load(self, scene_id: str):
        return self.source.load("toy_0000")


@pytest.mark.parametrize(
    "name", ["../../escaped/x", "..", ".", "a/b", "", "x" * 129, "a b", "scene\x00", "refs", "HEAD", ".hidden"]
)
def test_unsafe_names_are_refused(name):
    with pytest.raises(UnsafeNameError, match="cannot name a folder"):
        check_name(name, "scene id")


@pytest.mark.parametrize("name", ["toy_0000", "scene0000_00", "seq-01", "n015-2018.07", "x" * 128])
def test_safe_names_pass(name):
    assert check_name(name, "scene id") == name


def test_a_hostile_scene_id_from_a_dataset_publishes_nothing_outside_the_store(tmp_path):
    base = plan_from_dict(toy_plan_dict(tmp_path / "root" / "store" / "s.zarr", num_scenes=1))
    plan = Plan(base.store, Renamed(base.dataset, "../../escaped/x"), base.vocabulary, "cpu", dict(base.stages))
    with pytest.raises(UnsafeNameError, match="gives the scene id '../../escaped/x'"):
        Runner(plan).run()
    assert not (tmp_path / "root" / "escaped").exists() and not (tmp_path / "root" / "store" / "escaped").exists()
    with pytest.raises(UnsafeNameError):  # checked again where store paths are built
        INPUT_SPEC.path("../../escaped/x")


def test_query_with_a_scene_of_dots_fails_cleanly(tmp_path):
    plan = plan_from_dict(toy_plan_dict(tmp_path / "s.zarr", num_scenes=1))
    Runner(plan).run(fail_fast=True)
    result = CliRunner().invoke(app, ["query", "chair", "--store", str(tmp_path / "s.zarr"), "--scene", "../.."])
    assert result.exit_code == 2 and "no scene '../..'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_class_names_never_make_a_path():
    assert capability_scene("shower curtain") == "capability-shower-curtain"
    for hostile in ("../../etc/passwd", "../x", "a/../../b", "/abs"):
        name = capability_scene(hostile)
        assert check_name(name, "capability scene") == name and name.startswith("capability-")


def test_file_names_from_dataset_files_stay_in_their_folder(tmp_path):
    assert contained(tmp_path, "samples/a.bin", "f") == tmp_path / "samples/a.bin"
    assert contained(tmp_path, "a/../b.bin", "f") == tmp_path / "a/../b.bin"
    for bad in ("../outside.bin", "a/../../outside.bin", "/etc/passwd"):
        with pytest.raises(UnsafeNameError, match="lies outside"):
            contained(tmp_path, bad, "the file")


@pytest.mark.realdata
def test_a_nuscenes_sample_naming_a_file_outside_its_folder_is_refused(tmp_path):
    from ovlift.datasets.nuscenes_sample import NuScenesSampleConfig, NuScenesSampleDataset

    demo = shared_data("nuscenes-demo")
    folder = tmp_path / "hostile"
    folder.mkdir()
    for file in demo.iterdir():
        if file.name != "sample.json":
            (folder / file.name).symlink_to(file)
    data = json.loads((demo / "sample.json").read_text())
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    data["sample"]["lidar_points"]["lidar_path"] = "../secret.bin"
    (folder / "sample.json").write_text(json.dumps(data))
    dataset = NuScenesSampleDataset(NuScenesSampleConfig(paths=(str(folder),)))
    with pytest.raises(UnsafeNameError, match=r"sample.json names the file '../secret.bin', which lies outside"):
        dataset.load("hostile")


@pytest.mark.parametrize("variant", [".", "..", "a/b"])
def test_a_variant_that_is_not_one_folder_fails_at_plan_load(tmp_path, variant):
    from ovlift.pipeline.plan import PlanError

    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1)
    data["stages"]["extract2d"] = {variant: {"implementation": "synthetic"}}
    with pytest.raises(PlanError, match=r"stages.extract2d: variant name .* cannot name a folder"):
        plan_from_dict(data)
