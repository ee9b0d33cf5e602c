"""Plan files: typed like every config, ${ENV} paths, `ovlift validate`, and the
committed plans in plans/ that users copy."""

import pytest
import yaml
from conftest import REPO, shared_data
from tiny_models import clip_folder
from typer.testing import CliRunner

from ovlift.pipeline.cli import app
from ovlift.pipeline.plan import PlanError, apply_overrides, load_plan

PLANS = sorted(p for p in (REPO / "plans").glob("*.yaml") if not p.name.startswith("teachers-"))
"""The committed plans (``teachers-*.yaml`` are teacher specs: tests/test_trained_teachers.py)."""


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def small_plan(tmp_path, **changes):
    data = {
        "store": "s.zarr",
        "dataset": {"name": "toy", "num_scenes": 2},
        "splits": {"train": ["toy_0000"]},
        "stages": {"input": {}, "project": {}},
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "change, key",
    [
        ({"stage": {}}, "stage"),  # top-level typo
        ({"dataset": {"name": "toy", "num_scens": 2}}, "num_scens"),
        ({"stages": {"input": {}, "projcet": {}}}, "projcet"),
        ({"stages": {"input": {}, "project": {"cut_bund": 3}}}, "stages.project: cut_bund"),
        ({"splits": {"train": "toy_0000"}}, "splits.train"),
        ({"device": ["cpu"]}, "device"),
    ],
)
def test_a_typo_fails_naming_the_file_and_the_key(tmp_path, change, key):
    path = write(tmp_path / "typo.yaml", small_plan(tmp_path, **change))
    with pytest.raises(PlanError) as err:
        load_plan(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_environment_variables_fill_paths_with_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("OVLIFT_TEST_STORE", str(tmp_path / "elsewhere"))
    path = write(tmp_path / "p.yaml", small_plan(tmp_path, store="${OVLIFT_TEST_STORE}/s.zarr"))
    assert load_plan(path).store == str(tmp_path / "elsewhere" / "s.zarr")
    path = write(tmp_path / "p.yaml", small_plan(tmp_path, store="${OVLIFT_UNSET_VAR:-fallback}/s.zarr"))
    assert load_plan(path).store == str(tmp_path / "fallback" / "s.zarr")
    monkeypatch.setenv("OVLIFT_EMPTY_VAR", "")  # empty counts as unset, as in a shell
    path = write(tmp_path / "p.yaml", small_plan(tmp_path, store="${OVLIFT_EMPTY_VAR:-fallback}/$$x.zarr"))
    assert load_plan(path).store == str(tmp_path / "fallback" / "$x.zarr")  # $$ is a literal $
    path = write(tmp_path / "p.yaml", small_plan(tmp_path, store="${OVLIFT_UNSET_VAR}/s.zarr"))
    with pytest.raises(PlanError, match=r"p.yaml: store: environment variable 'OVLIFT_UNSET_VAR' is not set"):
        load_plan(path)


def test_only_ovlift_and_declared_variables_expand(tmp_path, monkeypatch):
    """A plan reads ``OVLIFT_*`` and the variables its ``environment`` key lists: any other
    ``${NAME}`` (a secret, say) fails naming the file, the key and the variable, even with
    a default, before anything of the plan is used."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OVLIFT_X", str(tmp_path / "ovlift-x"))
    path = write(tmp_path / "p.yaml", small_plan(tmp_path, store="${HOME}/s.zarr"))
    with pytest.raises(PlanError) as err:
        load_plan(path)
    assert str(err.value) == (
        f"{path}: store: '${{HOME}}' reads environment variable 'HOME', which the plan does not declare: "
        "plans read OVLIFT_* variables and those listed in the top-level key 'environment' "
        "(add: environment: [HOME])"
    )
    dataset = {"name": "toy", "num_scenes": 2, "seed": "${AWS_SECRET_ACCESS_KEY:-0}"}
    path = write(tmp_path / "p.yaml", small_plan(tmp_path, dataset=dataset))
    with pytest.raises(PlanError, match=r"p.yaml: dataset.seed: .*'AWS_SECRET_ACCESS_KEY', which the plan does not"):
        load_plan(path)
    path = write(tmp_path / "p.yaml", small_plan(tmp_path, store="${HOME}/s.zarr", environment=["HOME"]))
    assert load_plan(path).store == str(tmp_path / "home" / "s.zarr")
    path = write(tmp_path / "p.yaml", small_plan(tmp_path, store="${OVLIFT_X}/s.zarr"))
    assert load_plan(path).store == str(tmp_path / "ovlift-x" / "s.zarr")
    for bad in ("HOME", ["${HOME}"], ["A-B"]):
        path = write(tmp_path / "p.yaml", small_plan(tmp_path, environment=bad))
        with pytest.raises(PlanError, match=r"p.yaml: environment: expected a list of environment variable names"):
            load_plan(path)


def test_every_committed_plan_validates():
    assert {p.name for p in PLANS} >= {"demo.yaml", "openscene-7scenes.yaml"}
    result = CliRunner().invoke(app, ["validate", *map(str, PLANS)])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok:") == len(PLANS)


def test_validate_without_paths_needs_no_data_and_with_them_checks_data_and_models(tmp_path, monkeypatch):
    plan = str(REPO / "plans" / "openscene-7scenes.yaml")
    monkeypatch.setenv("OVLIFT_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("OVLIFT_MODELS", str(tmp_path / "models"))
    assert CliRunner().invoke(app, ["validate", plan]).exit_code == 0
    result = CliRunner().invoke(app, ["validate", "--check-paths", plan])
    assert result.exit_code == 1 and "dataset" in result.output and "no-data" in result.output
    monkeypatch.setenv("OVLIFT_DATA", str(shared_data("7scenes-redkitchen").parent))
    result = CliRunner().invoke(app, ["validate", "--check-paths", plan])
    assert result.exit_code == 1 and "stages.extract2d.clip: clip_path" in " ".join(result.output.split())
    clip_folder(tmp_path / "models" / "clip-vit-base-patch16")
    result = CliRunner().invoke(app, ["validate", "--check-paths", plan])
    assert result.exit_code == 0 and "1 scenes" in result.output, result.output


def test_the_demo_runs_the_committed_demo_plan(tmp_path):
    from ovlift.demo import demo_plan

    committed = yaml.safe_load((REPO / "plans" / "demo.yaml").read_text())
    used = demo_plan(tmp_path)
    assert used["stages"] == committed["stages"] and used["dataset"] == committed["dataset"]
    assert used["store"] == str(tmp_path / "store.zarr")


def test_split_scene_ids_are_checked_when_the_dataset_is_listed(tmp_path):
    path = write(tmp_path / "p.yaml", small_plan(tmp_path, splits={"train": ["toy_0042"]}))
    assert load_plan(path, list_scenes=False).splits == {"train": ["toy_0042"]}
    with pytest.raises(PlanError, match=r"splits.train: scenes \['toy_0042'\] are not in dataset 'toy'"):
        load_plan(path)


def test_set_overrides_plan_keys_as_yaml_and_names_bad_ones(tmp_path):
    data = {"store": "s.zarr", "dataset": {"name": "toy"}, "stages": {"input": {}}}
    out = apply_overrides(data, ["dataset.num_scenes=3", "stages.project.cut_bound=2", "splits.train=[a, b]"], "p")
    assert out["dataset"] == {"name": "toy", "num_scenes": 3}
    assert out["stages"]["project"] == {"cut_bound": 2} and out["splits"]["train"] == ["a", "b"]
    with pytest.raises(PlanError, match=r"--set 'dataset.num_scenes': expected KEY=VALUE"):
        apply_overrides(data, ["dataset.num_scenes"], "p")
    with pytest.raises(PlanError, match=r"p: --set 'store.root': 'store' is not a mapping"):
        apply_overrides(data, ["store.root=/x"], "p")


def test_a_committed_scannet_plan_validates_against_data_given_by_set(tmp_path, monkeypatch):
    """``ovlift validate --check-paths --set dataset.paths=[...]``: the scenes are listed from
    a tiny ScanNet in the published layout and the named splits resolve."""
    from layout_scene import layout_scene
    from scannet_layout import write_scene

    root = tmp_path / "scannet"
    write_scene(
        root / "scans", "scene0000_00", layout_scene(num_frames=5)
    )  # the scannet tests' room (its classes are in the tsv)
    for split in ("train", "val"):
        (root / f"scannetv2_{split}.txt").write_text("scene0000_00\n")
    clip_folder(tmp_path / "models" / "clip-vit-base-patch16")
    monkeypatch.setenv("OVLIFT_MODELS", str(tmp_path / "models"))
    plan = str(REPO / "plans" / "openscene-scannet.yaml")
    sets = [f"dataset.{key}={value}" for key, value in (("paths", f"[{root / 'scans'}]"), ("splits_dir", root))]
    sets.append(f"dataset.label_table={root / 'scannetv2-labels.combined.tsv'}")
    args = ["validate", "--check-paths", plan] + [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "1 scenes" in result.output, result.output
    result = CliRunner().invoke(app, ["validate", "--check-paths", plan, "--set", f"dataset.paths=[{tmp_path}/none]"])
    assert result.exit_code == 1 and "none' does not exist" in " ".join(result.output.split())


def test_the_scannet_method_plans_follow_their_papers():
    """SAS's supplementary: "sigma = 0.2D for ScanNet v2 ... consistent with OpenScene", relative to
    the pixel's depth. CUS3D, Sec. 2.2 and 3.1: three fully connected layers project the 3D ResU-Net's
    features (its code feeds RGB + xyz), "an initial learning rate of 0.001 with cosine annealing"."""
    sas = load_plan(REPO / "plans" / "sas-scannet.yaml", list_scenes=False)
    project = sas.stages["project"].stage.config
    assert (project.tolerance_kind, project.depth_tolerance) == ("relative", 0.2)
    for name in ("cus3d-scannet", "cus3d-s3dis"):
        distill = load_plan(REPO / "plans" / f"{name}.yaml", list_scenes=False).stages["distill"].stage.config
        assert distill.student.head == "mlp" and distill.student.use_color, name
        assert (distill.lr, distill.schedule) == (0.001, "cosine"), name
