"""The build files' promises: ``make clean`` keeps the stores, and the dependency floors
exclude the releases with known code-execution holes while ``constraints.txt`` meets them."""

import os
import shutil
import subprocess
import tomllib

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def make(target: str, cwd, **variables: str) -> subprocess.CompletedProcess:
    """The Makefile's ``target`` run in ``cwd`` (a scratch folder: it stands in for a checkout),
    stdin not a terminal, YES only when given."""
    env = {k: v for k, v in os.environ.items() if k not in ("YES", "MAKEFLAGS", "MAKELEVEL")}
    command = ["make", "-s", "-f", str(REPO / "Makefile"), target, *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)


@needs_make
def test_make_clean_removes_build_products_and_keeps_the_stores(tmp_path):
    for folder in (".venv/bin", "site", "ovlift.egg-info", "work/demo/store.zarr"):
        (tmp_path / folder).mkdir(parents=True)
    assert make("clean", tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert (tmp_path / "work/demo/store.zarr").is_dir()


@needs_make
def test_make_clean_work_asks_and_off_a_terminal_needs_yes(tmp_path):
    (tmp_path / "work/demo/store.zarr").mkdir(parents=True)
    refused = make("clean-work", tmp_path)
    assert refused.returncode != 0 and (tmp_path / "work/demo/store.zarr").is_dir()
    assert "make clean-work: not on a terminal, so not asking; run 'make clean-work YES=1'" in refused.stderr
    assert make("clean-work", tmp_path, YES="1").returncode == 0
    assert not (tmp_path / "work").exists()


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    return {canonicalize_name(r.name): r for r in map(Requirement, listed)}


@pytest.mark.parametrize(
    "name, unsafe, first_safe",
    [
        ("torch", "2.5.1", "2.6.0"),  # torch.load(weights_only=True) bypass, CVE-2025-32434
        ("torchvision", "0.20.1", "0.21.0"),  # torch 2.6's match
        ("sentence-transformers", "5.9.0", "6.0.0"),  # imports modules.json's classes untrusted
    ],
)
def test_dependency_floors_exclude_unsafe_releases(name, unsafe, first_safe):
    specifier = requirements()[name].specifier
    assert not specifier.contains(unsafe) and specifier.contains(first_safe), f"{name}{specifier}"


def test_constraints_pins_meet_the_floors():
    """Every pin of constraints.txt of a package pyproject.toml lists satisfies its specifier."""
    wanted = requirements()
    checked = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pin = Requirement(line)
        (version,) = [s.version for s in pin.specifier]
        required = wanted.get(canonicalize_name(pin.name))
        if required is not None:
            assert required.specifier.contains(version, prereleases=True), f"constraints.txt: {line} vs {required}"
            checked.append(canonicalize_name(pin.name))
    assert {"torch", "torchvision", "sentence-transformers"} <= set(checked)
