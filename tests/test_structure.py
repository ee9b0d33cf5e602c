"""The structure the rest is built on: layers that only point down, one place per
stage fact, one teacher registry, and fingerprints that survive refactors."""

import ast
import json
import re
import warnings
from pathlib import Path

import pytest
from conftest import REPO, tiny_pipeline_plan

from ovlift.cache_schema import GroupSpec, Scope, Store
from ovlift.cache_schema.groups.distill import DISTILL_SPEC
from ovlift.cache_schema.groups.extract2d import EXTRACT2D_SPEC
from ovlift.demo import PLANS, demo_plan
from ovlift.models.teachers.registry import RENAMED, TEACHERS
from ovlift.pipeline.plan import load_plan, plan_from_dict
from ovlift.pipeline.registry import STAGES, stage_class, stage_classes
from ovlift.pipeline.runner import Runner
from ovlift.pipeline.status import expected_fingerprints
from ovlift.stages.extract2d import Extract2DStage
from ovlift.stages.project import ProjectConfig, ProjectStage

PACKAGE = REPO / "ovlift"


def imported_modules(path: Path) -> set[str]:
    """Every ovlift module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("ovlift")}


def test_no_stage_imports_another_stage():
    for path in (PACKAGE / "stages").glob("*.py"):
        others = {m for m in imported_modules(path) if m.startswith("ovlift.stages") and m != "ovlift.stages.base"}
        assert not others, f"{path.name} imports {others}"


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("models", ("ovlift.stages", "ovlift.pipeline", "ovlift.flows")),
        ("cache_schema", ("ovlift.stages", "ovlift.pipeline", "ovlift.models", "ovlift.datasets")),
        ("kernels", ("ovlift.stages", "ovlift.pipeline", "ovlift.models", "ovlift.cache_schema")),
        ("datasets", ("ovlift.stages", "ovlift.pipeline", "ovlift.models")),
    ],
)
def test_lower_layers_do_not_import_upper_ones(layer, forbidden):
    for path in (PACKAGE / layer).rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.startswith(forbidden)}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_a_stage_takes_name_scope_variants_and_config_from_its_spec_and_type():
    stage = ProjectStage(ProjectConfig())
    assert ProjectStage.Config is ProjectConfig and stage.name == "project" and not stage.is_global
    assert stage.path("s1") == "scenes/s1/project"
    for name in STAGES:
        assert all(cls.spec.stage == name for cls in stage_classes(name))
    for path in (PACKAGE / "stages").glob("*.py"):  # nothing the spec or type parameter already says
        assert not re.search(r"^    (name|Config|scope|has_variants) = ", path.read_text(), re.M), path.name
    with pytest.raises(ValueError, match="<teacher> name"):
        Extract2DStage(TEACHERS["synthetic"].Config())


def test_group_paths_come_from_the_spec_and_refuse_the_wrong_scope():
    assert EXTRACT2D_SPEC.path("s1", "clip") == "scenes/s1/extract2d/clip"
    assert DISTILL_SPEC.path() == "global/distill" and DISTILL_SPEC.scope is Scope.GLOBAL
    assert EXTRACT2D_SPEC.path_pattern() == "scenes/<scene_id>/extract2d/<teacher>"
    with pytest.raises(ValueError, match="global stage 'distill' needs no scene"):
        DISTILL_SPEC.path("s1")
    with pytest.raises(ValueError, match="needs a scene id"):
        GroupSpec("x", "doc", ()).path()
    with pytest.raises(ValueError, match="needs a <teacher> name"):
        EXTRACT2D_SPEC.path("s1")


def test_every_teacher_is_registered_once_with_its_own_config():
    configs = [cls.Config for cls in TEACHERS.values()]
    assert len(set(configs)) == len(configs)
    for name, cls in TEACHERS.items():
        assert cls.name == name and cls.version and cls.Config.__name__.endswith("Config")
    assert set(STAGES["extract2d"]) == set(TEACHERS)
    assert "maskclip" in TEACHERS and "mask-crops" in TEACHERS and "mask-clip" not in TEACHERS


def test_a_renamed_teacher_still_loads_with_a_warning_and_keeps_its_fingerprints(tmp_path):
    old, new = "mask-clip", RENAMED["mask-clip"]
    assert stage_class("extract2d", old) == stage_class("extract2d", new)
    assert stage_class("extract2d", old)[1:] == (TEACHERS[new].Config, new)
    entry = {"implementation": old, "segmenter_path": "/m/seg", "clip_path": "/m/clip"}
    data = {
        "store": str(tmp_path / "w.zarr"),
        "dataset": {"name": "toy"},
        "stages": {"input": {}, "extract2d": {"cus3d": entry}},
    }
    with pytest.warns(FutureWarning, match="stages.extract2d.cus3d: extract2d 'mask-clip' is now called 'mask-crops'"):
        plan_from_dict(data)
    # the warning points at the line that loaded the plan, not inside ovlift
    (tmp_path / "plan.yaml").write_text(json.dumps(data))
    with pytest.warns(FutureWarning, match="is now called") as record:
        load_plan(tmp_path / "plan.yaml")
    assert [w.filename for w in record] == [__file__]

    def plan(implementation):
        entry = {"implementation": implementation, "segmenter_path": "/m/seg", "clip_path": "/m/clip"}
        data = {
            "store": str(tmp_path / "s.zarr"),
            "dataset": {"name": "toy", "num_scenes": 1},
            "stages": {"input": {}, "extract2d": {"t": entry}},
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            p = plan_from_dict(data)
        return {path: e.fingerprint for path, e in expected_fingerprints(p, Store(p.store)).items()}

    assert plan(old) == plan(new)


PINNED = REPO / "tests" / "data" / "pinned_fingerprints.json"


def current_fingerprints(tmp_path: Path) -> dict[str, dict[str, str]]:
    """The demo's group fingerprints and those of a plan with every model teacher."""
    data = demo_plan(tmp_path)
    plan = plan_from_dict(data, base_dir=PLANS)  # as `ovlift demo` reads it: its teacher's path is relative
    found = {"demo": {path: e.fingerprint for path, e in expected_fingerprints(plan, Store(plan.store)).items()}}
    teachers = {
        "syn": {"implementation": "synthetic"},
        "mc": {"implementation": "maskclip", "clip_path": "/m/clip"},
        "crops": {
            "implementation": "mask-crops",
            "segmenter_path": "/m/seg",
            "clip_path": "/m/clip",
            "encoding": "masks",
        },
        "cap": {
            "implementation": "caption-aligned",
            "segmenter_path": "/m/seg",
            "captioner_path": "/m/cap",
            "tagger_path": "/m/tagger",
            "text": {"kind": "minilm"},
        },
    }
    data = {
        "store": str(tmp_path / "t.zarr"),
        "dataset": {"name": "toy", "num_scenes": 1},
        "stages": {"input": {}, "extract2d": teachers, "project": {}},
    }
    plan = plan_from_dict(data, base_dir=tmp_path)
    found["teachers"] = {path: e.fingerprint for path, e in expected_fingerprints(plan, Store(plan.store)).items()}
    found.update(toy_plan_fingerprints(tmp_path))
    return found


def toy_plan_fingerprints(tmp_path: Path) -> dict[str, dict[str, str]]:
    """The committed toy studies' global groups and their first scene's: every stage
    implementation (capability, fuse, objects, denoise, both distills) at its plan's settings."""
    found = {}
    for name in ("cus3d-toy", "sas-toy", "clip2scene-toy"):
        plan = load_plan(REPO / "plans" / f"{name}.yaml", overrides=[f"store={tmp_path / name}.zarr"])
        first = f"scenes/{plan.dataset.scene_ids()[0]}/"
        expected = expected_fingerprints(plan, Store(plan.store)).items()
        found[name] = {p: e.fingerprint for p, e in expected if p.startswith(("global/", first))}
    return found


def test_fingerprints_change_only_on_purpose(tmp_path):
    """A change here invalidates every user's cache. When it is meant (a stage's version
    bump), regenerate with ``.venv/bin/python tests/test_structure.py`` and say why in
    the commit. Last changes: the demo gained CUS3D's stages; distill gained ``source``; the
    2D filter's fields on synthetic and mask-crops (mask-crops v2); toy generator v2 (welded meshes);
    distill gained SAS's superpoint and TESD fields; project gained lidar_zbuffer_px; maskclip v2 (normalize);
    toy appearance v3 (toy generator v3, toy-street v2, render generator v3, their ``appearance`` fields);
    the demo's trained teacher and test rooms; the toy studies' test splits (more scenes; predict on
    every scene, evaluate on test); model paths left out (their files' contents stand in), so the pins
    hold in a clone anywhere; the toy studies on trained teachers, distill v3 (epoch_val_loss) and
    val_split (distill reads the val scenes)."""
    assert current_fingerprints(tmp_path) == json.loads(PINNED.read_text())


def test_an_added_field_at_its_default_keeps_fingerprints_and_otherwise_changes_them():
    from ovlift.stages.denoise import DenoiseConfig

    default, fused = DenoiseConfig(), DenoiseConfig(observations="fused")
    assert "observations" not in default.fingerprinted()  # the pins above hold the field's absence
    assert fused.fingerprinted() == {**default.fingerprinted(), "observations": "fused"}


def documented_paths() -> dict[str, str]:
    """stage -> the path pattern docs/cache_schema.md gives for its groups."""
    text = (REPO / "docs" / "cache_schema.md").read_text()
    return dict(re.findall(r"^## `([\w-]+)`\n\n.*?\n\nPath: `([^`]+)`", text, re.M | re.S))


def test_the_schema_document_names_the_paths_the_runner_really_writes(tmp_path):
    plan = load_plan(tiny_pipeline_plan(tmp_path / "plan.yaml", epochs=1, num_scenes=2))
    runner = Runner(plan)
    assert not runner.run().failed
    store = runner.store
    written = [p for s in store.scene_ids() for p in store.stage_groups(s)] + store.groups_under("global")
    documented = documented_paths()
    assert documented["distill"] == "global/distill" and documented["evaluate"] == "global/evaluate"
    stages_seen = set()
    for path in written:
        stage = store.inspect(path)[1]["stage"]
        pattern = re.escape(documented[stage]).replace("<scene_id>", "[^/]+")
        pattern = re.sub(r"<\w+>", "[^/]+", pattern)
        assert re.fullmatch(pattern, path), f"runner wrote {path}; docs say {documented[stage]}"
        stages_seen.add(stage)
    assert stages_seen == {"input", "extract2d", "project", "distill", "predict", "evaluate", "text"}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        PINNED.write_text(json.dumps(current_fingerprints(Path(tmp)), indent=2, sort_keys=True) + "\n")
    print(f"wrote {PINNED}")


MAX_FUNCTION_LINES = 50
"""Longest function or method in ovlift/, ``def`` to its last line, docstring included."""


def test_no_function_in_the_package_is_longer_than_fifty_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split into named steps: " + ", ".join(long)


def test_lint_exceptions_only_shrink():
    """Each per-file exception in pyproject.toml still silences something, and none is in ovlift/."""
    import subprocess
    import sys
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    exceptions = config["tool"]["ruff"]["lint"]["per-file-ignores"]
    assert not [path for path in exceptions if path.startswith("ovlift")]
    ruff = Path(sys.executable).parent / "ruff"
    for path, rules in exceptions.items():
        found = subprocess.run(
            [ruff, "check", "--select", ",".join(rules), "--config", "lint.per-file-ignores = {}", path],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert found.returncode == 1, f"{path} no longer needs {rules}: remove it from per-file-ignores"


def test_plugins_that_read_ground_truth_are_oracles_and_model_ones_are_not():
    from ovlift.models.generators.registry import GENERATORS
    from ovlift.stages.capability import CapabilityStage

    synthetic = Extract2DStage(TEACHERS["synthetic"].Config(), "t")
    assert synthetic.oracle == "ground-truth labels and instances of the frames (extract2d 't')"
    maskclip = Extract2DStage(TEACHERS["maskclip"].Config(clip_path="/m/clip"), "mc")
    assert maskclip.oracle is None
    assert "exact masks" in CapabilityStage(GENERATORS["render"].Config()).oracle
    sd = GENERATORS["diffusion-sam"].Config(diffusion_path="/m/sd", sam_path="/m/sam.pth")
    assert CapabilityStage(sd).oracle is None
