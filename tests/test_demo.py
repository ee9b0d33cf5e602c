from typer.testing import CliRunner

from ovlift.pipeline.cli import app


def test_demo_command_runs_end_to_end_then_reuses_the_cache(tmp_path):
    """The quick variant of `ovlift demo` (same plan, tiny sizes): the metrics table,
    the outputs, and a second run that is all cache hits."""
    cli = CliRunner()
    first = cli.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--quick"])
    assert first.exit_code == 0, first.output
    assert "0 cached" in first.output
    for row in ("fused 2D", "distilled 3D", "2D-3D ensemble", "chance (uniform guess)"):
        assert row in first.output
    outputs = tmp_path / "demo" / "outputs"
    for name in (
        "metrics.md",
        "report.json",
        "confusion_3d.png",
        "training_curves.png",
        "toy_0002_student_labels.ply",
        "toy_0002_a_sofa_student.png",
    ):
        assert (outputs / name).stat().st_size > 100, name
    second = cli.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--quick"])
    assert second.exit_code == 0, second.output
    assert " 0 ran" in second.output
