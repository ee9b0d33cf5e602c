"""The command line as a newcomer meets it: help, mistyped queries and scenes, the query
picture's title, and progress in a log."""

import re

import typer
from typer.testing import CliRunner

from ovlift.pipeline.cli import app


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
