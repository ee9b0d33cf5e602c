"""The command line as a newcomer meets it: help, mistyped queries and scenes, the query
picture's title, and progress in a log."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import typer
import yaml
from conftest import toy_plan_dict
from PIL import Image
from typer.testing import CliRunner

from ovlift import progress as progress_module
from ovlift.pipeline.cli import app
from ovlift.ply import read_ply
from ovlift.progress import progress


def words(text: str) -> str:
    """``text`` with every run of blanks one space and no box lines: help and errors are
    wrapped to the width (help also after a hyphen), Rich's help in boxes."""
    return re.sub(r"- ", "-", " ".join(re.sub("[│╭╮╰╯─]", " ", text).split()))


def commands(command, path: tuple[str, ...] = ()):
    """Every command under ``command`` with its path (typer 0.29 vendors click: groups have ``commands``)."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def test_every_help_renders_with_every_help_text():
    """`--help` of the app and of every command and subcommand exits 0 and shows each option's
    and argument's help as written (the --set example "[/data/scans]" was read as a markup tag)."""
    tree = list(commands(typer.main.get_command(app)))
    assert {"run", "ingest", "validate", "query", "flow"} <= {p[0] for p, _ in tree if p}
    for path, command in tree:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"ovlift {' '.join(path)} --help: {result.output}{result.exception!r}"
        shown = words(result.output)
        helps = [p.help for p in command.params if getattr(p, "help", None)]
        assert helps or not command.params, path
        for text in helps:
            assert words(text) in shown, f"ovlift {' '.join(path)} --help lacks {text!r}"
    run_help = CliRunner().invoke(app, ["run", "--help"]).output
    assert "(dataset.paths=[/data/scans])" in words(run_help)


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_a_blank_query_is_an_error_before_the_store_or_a_model_is_opened(tmp_path, monkeypatch, text):
    def fail(*args, **kwargs):
        raise AssertionError("a text encoder was loaded for a blank query")

    monkeypatch.setattr("ovlift.pipeline.text_cache.load_text_encoder", fail)
    store = tmp_path / "s.zarr"
    result = CliRunner().invoke(app, ["query", "--store", str(store), "--scene", "toy_0000", text])
    assert result.exit_code == 2, result.output
    assert "the query text is empty" in words(result.output)
    assert not store.exists()  # opening a store creates it: nothing was opened


@pytest.fixture(scope="module")
def store_of_12(tmp_path_factory):
    """12 ingested toy scenes; toy_0000 also through CUS3D's denoise (one synthetic teacher 't')."""
    root = tmp_path_factory.mktemp("cli")
    data = toy_plan_dict(
        root / "s.zarr", num_scenes=12, num_frames=3, image_height=48, image_width=64, vertex_spacing_m=0.15
    )
    teacher = {"implementation": "synthetic", "feature_height": 48, "feature_width": 64, "noise_std": 0.2}
    teacher["confusion"] = {"chair": {"sofa": 0.4}, "table": {"desk": 0.4}}
    data["stages"].update({"extract2d": {"t": teacher}, "project": {"cut_bound": 1}})
    data["stages"].update({"segment": {}, "objects": {}, "denoise": {}})
    plan = root / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    for args in (["ingest", str(plan)], ["run", str(plan), "--scenes", "toy_0000"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    return root


def test_an_unknown_scene_is_named_with_the_scenes_there_are(store_of_12, tmp_path):
    store, plan = str(store_of_12 / "s.zarr"), str(store_of_12 / "plan.yaml")
    result = CliRunner().invoke(app, ["query", "--store", store, "--scene", "toy_0099", "a sofa"])
    assert result.exit_code == 2
    shown = ", ".join(f"toy_{i:04d}" for i in range(10))
    assert f"no scene 'toy_0099' in {store}; scenes: {shown}, ... (12 in all)" in words(result.output)
    known = CliRunner().invoke(app, ["query", "--store", store, "--scene", "toy_0003", "a sofa"])
    assert known.exit_code == 2 and "no complete 'predict' group" in words(known.output)  # there, not run yet
    missing = CliRunner().invoke(app, ["query", "--store", str(tmp_path / "none.zarr"), "--scene", "x", "a sofa"])
    assert missing.exit_code == 2 and "no store at" in missing.output and not (tmp_path / "none.zarr").exists()
    for command in ("run", "ingest", "flow"):  # against the dataset; flow before Prefect starts
        result = CliRunner().invoke(app, [command, plan, "--scenes", "toy_0000,toy_0099"])
        assert result.exit_code == 2, result.output
        assert "scenes ['toy_0099'] are not in dataset 'toy'; its scenes: toy_0000" in words(result.output)
        assert "(12 in all)" in result.output and "Prefect" not in result.output


def test_the_query_picture_is_titled_with_the_features_it_drew(store_of_12, tmp_path):
    """Denoised features differ from the fused ones where CUS3D's vote dropped views; the
    PLY's similarity is NaN exactly where the drawn group has no feature, and the PNG's
    title (its PNG metadata, as matplotlib wrote it) names that group."""
    from ovlift.cache_schema import Store

    store = str(store_of_12 / "s.zarr")
    groups = Store(store)
    seen = {
        "denoised": groups.read("scenes/toy_0000/denoise").load("seen"),
        "fused": groups.read("scenes/toy_0000/project").load("fused/t/seen"),
    }
    assert (seen["denoised"] != seen["fused"]).any()  # the two are told apart by their data
    for source in ("denoised", "fused"):
        args = ["query", "--store", store, "--scene", "toy_0000", "a sofa", "--source", source]
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        similarity = read_ply(tmp_path / f"toy_0000_a_sofa_{source}.ply").vertex_properties["similarity"]
        np.testing.assert_array_equal(np.isfinite(similarity), seen[source])
        title = Image.open(tmp_path / f"toy_0000_a_sofa_{source}.png").info["Title"]
        assert title == f"toy_0000: 'a sofa' ({source}/t)"
    bad = CliRunner().invoke(app, ["query", "--store", store, "--scene", "toy_0000", "a sofa", "--source", "noisy"])
    assert bad.exit_code == 2 and "unknown query source 'noisy'; one of student, fused, denoised" in words(bad.output)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_bars_on_a_terminal_and_lines_elsewhere(monkeypatch):
    monkeypatch.setenv("OVLIFT_PROGRESS", "1")
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert list(progress(range(3), "toy_0001: t", unit="batch")) == [0, 1, 2]
    assert "\r" in sys.stderr.getvalue()  # tqdm's redrawn bar
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(progress_module, "LINE_INTERVAL_S", 0.0)  # a line per item
    assert list(progress(iter("abc"), "scenes", unit="scene")) == ["a", "b", "c"]
    lines = sys.stderr.getvalue().splitlines()
    assert [re.sub(r" \(.*\)$", "", line) for line in lines] == [
        "scenes: 1 scene",
        "scenes: 2 scenes",
        "scenes: 3 scenes",
    ]
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(progress_module, "LINE_INTERVAL_S", 3600.0)  # only the end of the loop
    assert list(progress(range(4), "toy_0002: frames", unit="frame")) == [0, 1, 2, 3]
    assert re.fullmatch(r"toy_0002: frames: 4/4 frames \(\d+\.\d s\)\n", sys.stderr.getvalue())
    for unit, plural in (("batch", "batches"), ("epoch", "epochs")):
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        list(progress(range(2), "distill", unit=unit))
        assert sys.stderr.getvalue().startswith(f"distill: 2/2 {plural} ("), sys.stderr.getvalue()
    monkeypatch.setenv("OVLIFT_PROGRESS", "0")
    for stream in (Terminal(), io.StringIO()):
        monkeypatch.setattr(sys, "stderr", stream)
        assert list(progress(range(2), "x")) == [0, 1] and stream.getvalue() == ""


def test_a_run_into_a_pipe_logs_progress_as_whole_lines(tmp_path):
    """`ovlift run` with stderr to a pipe: no carriage return anywhere (ours nor Hugging Face's
    weight-loading bar), each line a log line or one finished loop; OVLIFT_PROGRESS=0 silences."""
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=2, num_frames=3, image_height=48, image_width=64)
    data["stages"].update(
        {"extract2d": {"t": {"implementation": "synthetic", "feature_height": 48, "feature_width": 64}}, "project": {}}
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k not in ("OVLIFT_PROGRESS", "HF_HUB_DISABLE_PROGRESS_BARS")}
    command = [sys.executable, "-m", "ovlift.pipeline.cli", "run", str(plan)]
    proc = subprocess.run(command, env=env, capture_output=True, timeout=600)  # bytes: text mode reads \r as \n
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "\r" not in stderr
    lines = stderr.split("\n")[:-1]
    loops = [line for line in lines if not re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) ", line)]
    parsed = [re.fullmatch(r"([\w ():]+): (\d+)/(\d+) ([a-z]+) \(\d+\.\d s\)", line) for line in loops]
    assert all(parsed), loops
    ends = [f"{m[1]}: {m[2]}/{m[3]} {m[4]}" for m in parsed if m[2] == m[3]]  # a slow loop may also say k/n
    assert ends == [
        *(
            f"toy_000{i}: {what}"
            for i in (0, 1)
            for what in ("frames: 3/3 frames", "t: 1/1 batch", "projecting: 1/1 batch")
        ),
        "scenes: 2/2 scenes",
    ]
    env["OVLIFT_PROGRESS"] = "0"
    quiet = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and "scenes:" not in quiet.stderr and "cached" in quiet.stdout


def test_a_long_path_in_a_message_is_never_broken_into_lines(tmp_path):
    """Messages are soft-wrapped: a path stays on one line whatever the terminal's width, so it
    can be copied, and found in a log (rich once broke one in CI and a test missed it)."""
    store = tmp_path / ("a-folder-name-long-enough-to-cross-any-terminal-width-" * 3) / "store.zarr"
    result = CliRunner().invoke(app, ["status", "--store", str(store)], env={"COLUMNS": "40"})
    assert result.exit_code == 2 and f"no store at '{store}'" in result.output, result.output
