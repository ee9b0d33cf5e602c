from typer.testing import CliRunner

from ovlift.pipeline.cli import app


def test_demo_runs_then_reuses_the_cache(tmp_path):
    cli = CliRunner()
    first = cli.invoke(app, ["demo", "--workdir", str(tmp_path / "demo")])
    assert first.exit_code == 0, first.output
    assert "0 cached" in first.output and "failed" in first.output
    second = cli.invoke(app, ["demo", "--workdir", str(tmp_path / "demo")])
    assert second.exit_code == 0, second.output
    assert " 0 ran" in second.output
    assert (tmp_path / "demo" / "plan.yaml").is_file()
