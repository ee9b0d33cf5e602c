"""The ``ovlift`` command line (typer)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tqdm.contrib.logging import logging_redirect_tqdm

from ovlift.cache_schema import Store, short
from ovlift.names import UnsafeNameError, check_name
from ovlift.pipeline.plan import PlanError, load_plan
from ovlift.pipeline.runner import Runner, RunReport, StaleUpstream
from ovlift.pipeline.status import StageStatus, State, store_status
from ovlift.progress import quiet_library_bars

# Help is plain text, never Rich markup: examples such as "dataset.paths=[/data/scans]" read as
# closing tags crashed every --help, and no help text here wants markup. One switch for all
# of them (docstrings too) instead of an escape on each; click's plain layout stays readable.
app = typer.Typer(
    help="Lift 2D open-vocabulary knowledge onto 3D point clouds.", no_args_is_help=True, rich_markup_mode=None
)


@app.callback()
def _every_command() -> None:
    quiet_library_bars()


# soft_wrap: a message is never broken into lines at the terminal's width, so a path in it
# stays whole (to copy, and to grep in a log); the terminal wraps it for display.
console = Console(stderr=False, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

PlanArg = Annotated[Path, typer.Argument(help="Plan YAML (dataset, store, stages).", exists=True, dir_okay=False)]
ScenesOpt = Annotated[list[str] | None, typer.Option("--scenes", help="Only these scenes (repeat or comma-separate).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a plan key: KEY=VALUE, VALUE as YAML (dataset.paths=[/data/scans]); repeat."),
]


def _fail(message: str) -> NoReturn:
    """End a command on bad input: one "error:" line, exit status 2, no traceback."""
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2) from None


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v for value in values for v in value.split(",") if v]


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def _load(plan_path: Path, overrides: list[str] | None = None):
    try:
        return load_plan(plan_path, overrides=overrides or ())
    except PlanError as err:
        _fail(str(err))


def _open_store(url: str) -> Store:
    """An existing store (opening a missing local path would create an empty one)."""
    if "://" not in url and not Path(url).exists():
        _fail(f"no store at '{url}'")
    return Store(url)


def _finish(report: RunReport) -> None:
    console.print(report.summary())
    if report.failed:
        table = Table("scene", "stage", "status", "error", title="failures")
        for o in report.failed:
            table.add_row(o.scene_id, o.stage, o.status, o.error or "")
        err_console.print(table)
        raise typer.Exit(1)


def _run(
    plan_path: Path, stages, scenes, force, fail_fast: bool, log_level: str, upstream: bool = True, overrides=None
) -> RunReport:
    _setup_logging(log_level)
    plan = _load(plan_path, overrides)
    runner = Runner(plan)
    try:
        with logging_redirect_tqdm():
            return runner.run(stages=stages, scenes=scenes, force=force, fail_fast=fail_fast, upstream=upstream)
    except StaleUpstream as err:
        _fail(str(err))
    except KeyError as err:
        _fail(str(err.args[0]))
    except UnsafeNameError as err:
        _fail(str(err))


@app.command()
def ingest(
    plan: PlanArg,
    scenes: ScenesOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Re-ingest even when cached.")] = False,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "info",
    overrides: SetOpt = None,
) -> None:
    """Read the plan's dataset into canonical scenes (the ``input`` stage)."""
    _finish(_run(plan, ["input"], _split(scenes), ["input"] if force else [], False, log_level, True, overrides))


@app.command()
def run(
    plan: PlanArg,
    stages: Annotated[
        list[str] | None, typer.Option("--stages", help="These stages and what they read (default: all in the plan).")
    ] = None,
    scenes: ScenesOpt = None,
    force: Annotated[
        list[str] | None,
        typer.Option(
            "--force", help="Rerun this stage on the selected scenes even if cached (and what reads the rerun groups)."
        ),
    ] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failing scene.")] = False,
    no_upstream: Annotated[
        bool, typer.Option("--no-upstream", help="With --stages: stop if a stage they read is stale, do not rerun it.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "info",
    overrides: SetOpt = None,
) -> None:
    """Run the plan's stages on its scenes, reusing every cached group."""
    _finish(
        _run(
            plan, _split(stages), _split(scenes), _split(force) or [], fail_fast, log_level, not no_upstream, overrides
        )
    )


@app.command()
def status(
    store: Annotated[str, typer.Option("--store", help="Store path or fsspec URL.")],
    plan: Annotated[Path | None, typer.Option("--plan", help="Also compare against this plan.", exists=True)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """Which stage is cached, stale or missing for which scene."""
    try:
        rows = store_status(_open_store(store), _load(plan) if plan else None)
    except UnsafeNameError as err:
        _fail(str(err))
    if as_json:
        for row in rows:
            print(json.dumps(row.to_json()))
        return
    print_status(rows)


def print_status(rows: list[StageStatus]) -> None:
    colours = {State.CACHED: "green", State.STALE: "yellow", State.MISSING: "red", State.INCOMPLETE: "red"}
    table = Table("scene", "group", "state", "fingerprint", "why")
    for r in rows:
        table.add_row(r.scene_id, r.path, f"[{colours[r.state]}]{r.state}[/]", short(r.fingerprint), r.reason)
    console.print(table)


@app.command()
def gc(
    plans: Annotated[list[Path], typer.Argument(help="Plans whose results to keep.", exists=True, dir_okay=False)],
    yes: Annotated[bool, typer.Option("--yes", help="Delete (without it: list what would go, with sizes).")] = False,
    overrides: SetOpt = None,
) -> None:
    """Remove every result of the plans' stores that none of the plans references now. A dry
    run unless --yes; refuses, deleting nothing, when the plans may not be what made the store."""
    from ovlift.pipeline.gc import GcRefused, collect

    try:
        results = collect([_load(p, overrides) for p in plans], dry_run=not yes)
    except (GcRefused, UnsafeNameError) as err:
        _fail(str(err))
    for result in results:
        for path in result.removed:
            typer.echo(f"{'removed' if yes else 'would remove'} {path} ({result.sizes[path] / 2**20:.1f} MiB)")
        verb = "freed" if yes else "would free"
        typer.echo(f"{result.store}: {len(result.removed)} entries, {verb} {result.bytes_freed / 2**20:.1f} MiB")
    if not yes and any(r.removed for r in results):
        typer.echo("a dry run: nothing was deleted; add --yes to delete")


@app.command()
def verify(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    scenes: ScenesOpt = None,
    stages: Annotated[list[str] | None, typer.Option("--stages", help="Only these stages' groups.")] = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Move damaged versions aside (to _damaged/); the next run recomputes them.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print each damaged piece as a JSON line.")] = False,
) -> None:
    """Read every chunk of every version a run may reuse and check it against the manifest
    recorded when it was published; exit 1 if anything is damaged."""
    from ovlift.pipeline.verify import verify as verify_store

    try:
        report = verify_store(_open_store(store), _split(scenes), _split(stages), repair)
    except KeyError as err:
        _fail(str(err.args[0]))
    if as_json:
        for d in report.damage:
            print(json.dumps(d.to_json()))
    elif report.damage:
        table = Table(title="damage")
        for column in ("group", "version", "array", "chunk", "problem"):
            table.add_column(column, overflow="fold")  # names whole, never cut with an ellipsis
        for d in report.damage:
            table.add_row(d.path, d.version, d.array, d.chunk, d.problem)
        console.print(table)
    for version, aside in report.moved.items():
        err_console.print(f"moved {version} to {aside}: the next `ovlift run` recomputes it and what read it")
    err_console.print(report.summary())
    if report.damage and not repair:
        err_console.print(f"run `ovlift verify {store} --repair`, then run the plan again")
    if report.damage:
        raise typer.Exit(1)


VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Show Prefect's and Dask's logs here too.")]
LogFileOpt = Annotated[
    Path | None, typer.Option("--log-file", help="Where Prefect's and Dask's logs go (default: $OVLIFT_LOG_DIR).")
]


def _flow_logging(plan: Path, verbose: bool, log_file: Path | None) -> None:
    """Before Prefect is imported: its and Dask's chatter to a log file unless ``-v``."""
    from ovlift import flow_logging

    if verbose:
        _setup_logging("info")
        return
    log_file = log_file or flow_logging.default_log_file(plan)
    flow_logging.quiet(log_file)
    flow_logging.ovlift_to_terminal()
    err_console.print(f"Prefect and Dask logs: {log_file} (-v shows them here)")


def _stage_table(report: RunReport) -> None:
    table = Table("stage", "ran", "cached", "failed", "skipped", title="run")
    for stage, counts in report.by_stage().items():
        table.add_row(stage, *(str(counts[s]) for s in ("ran", "cached", "failed", "skipped")))
    console.print(table)


@app.command()
def flow(
    plan: PlanArg,
    stages: Annotated[list[str] | None, typer.Option("--stages", help="Only these stages.")] = None,
    scenes: ScenesOpt = None,
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Rerun this stage (and what reads the rerun groups).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Start a local Dask cluster of this many workers.")] = 2,
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="Local workers that get a GPU (default: this machine's CUDA devices).")
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option("--dask-address", help="Join this Dask scheduler instead.")
    ] = None,
    torch_threads: Annotated[int, typer.Option("--torch-threads", help="Torch threads per worker task.")] = 1,
    verbose: VerboseOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Run the plan as Prefect flows, scenes mapped as tasks over Dask."""
    try:  # fail early, before starting Prefect, on a bad plan or scene
        Runner(_load(plan)).select_scenes(_split(scenes))
    except KeyError as err:
        _fail(str(err.args[0]))
    _flow_logging(plan, verbose, log_file)
    from ovlift.flows import run_dataset_flow  # Prefect is imported only here

    report = run_dataset_flow(
        str(plan),
        _split(stages),
        _split(scenes),
        _split(force) or [],
        workers=workers,
        dask_address=dask_address,
        gpus=gpus,
        torch_threads=torch_threads,
    )
    _stage_table(report)
    _finish(report)


@app.command()
def deploy(
    plan: PlanArg,
    name: Annotated[str, typer.Option("--name", help="Deployment name (ovlift-dataset/NAME).")],
    cron: Annotated[str | None, typer.Option("--cron", help='Schedule, e.g. "0 2 * * *".')] = None,
    work_pool: Annotated[str | None, typer.Option("--work-pool", help="Prefect work pool that runs it.")] = None,
    stages: Annotated[list[str] | None, typer.Option("--stages", help="Only these stages.")] = None,
    scenes: ScenesOpt = None,
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Rerun this stage (and what reads the rerun groups).")
    ] = None,
) -> None:
    """Register the plan's dataset flow as a Prefect deployment on the server at
    PREFECT_API_URL; a work pool's workers run it (without --work-pool, `ovlift serve` does)."""
    _load(plan)
    if not os.environ.get("PREFECT_API_URL"):
        _fail("set PREFECT_API_URL to the server to deploy to (docs/scale.md, Prefect server)")
    from ovlift.flows import deploy as deploy_flow

    selection = {"stages": _split(stages), "scenes": _split(scenes), "force": _split(force)}
    deployment_id = deploy_flow(str(plan), name, cron, work_pool, **selection)
    console.print(
        f"deployment ovlift-dataset/{name} ({deployment_id})" + (f" on work pool '{work_pool}'" if work_pool else "")
    )
    if not work_pool:
        console.print(f"it runs while `ovlift serve {plan} --name {name}` runs")


@app.command()
def serve(
    plans: Annotated[list[Path], typer.Argument(help="Plans to serve.", exists=True, dir_okay=False)],
    name: Annotated[
        str | None, typer.Option("--name", help="Deployment name (one plan; default: the plan's stem).")
    ] = None,
    cron: Annotated[str | None, typer.Option("--cron", help='Schedule, e.g. "0 2 * * *".')] = None,
    verbose: VerboseOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Serve the plans' dataset flows as deployments from this process until Ctrl-C: for
    users without a work pool. Runs are triggered from the UI, the schedule or the client."""
    if name and len(plans) > 1:
        _fail("--name names one deployment; serve several plans without it")
    for path in plans:
        _load(path)
    _flow_logging(plans[0], verbose, log_file)
    from ovlift.flows import deployment
    from ovlift.flows import serve as serve_flows

    serve_flows([deployment(str(p), name or p.stem, cron) for p in plans])


@app.command()
def query(
    text: Annotated[str, typer.Argument(help='What to look for, e.g. "a soft chair".')],
    store: Annotated[str, typer.Option("--store", help="Store path or fsspec URL.")],
    scene: Annotated[str, typer.Option("--scene", help="Scene id.")],
    source: Annotated[
        str,
        typer.Option(
            help="Features to query: 'student' (distilled 3D), 'fused' (2D teacher, project), "
            "'denoised' (CUS3D, denoise) or 'multi-fused' (SAS, fuse)."
        ),
    ] = "student",
    teacher: Annotated[
        str | None, typer.Option(help="Fused teacher (source fused, when project fused several).")
    ] = None,
    templates: Annotated[str, typer.Option(help="'single' or 'ensemble' prompt templates.")] = "single",
    out: Annotated[Path, typer.Option("--out", help="Folder for the PLY and PNG.")] = Path("queries"),
) -> None:
    """Colour a scene by similarity to a text: a PLY (MeshLab, CloudCompare) and a PNG."""
    from ovlift.query import QueryError, query_words, write_query_outputs

    try:
        query_words(text)  # a blank query fails before the store or a model is opened
        paths, top = write_query_outputs(_open_store(store), scene, text, source, teacher, templates, out)
    except (QueryError, KeyError) as err:
        _fail(str(err))
    console.print(f"wrote {paths[0]} and {paths[1]}")
    if top:
        console.print("classes of the 100 most similar points: " + ", ".join(f"{c} {n}" for c, n in top))


@app.command()
def export(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    out: Annotated[Path, typer.Argument(help="Folder to write OpenScene's files into.")],
    scenes: ScenesOpt = None,
    what: Annotated[
        list[str] | None,
        typer.Option(
            "--what", help="fused, denoised, multi-fused, student, predictions (repeat or comma-separate; default all)."
        ),
    ] = None,
    plain_names: Annotated[
        bool, typer.Option("--plain-names", help="Name feature files <scene>.pt, as OpenScene's nuScenes loader opens.")
    ] = False,
) -> None:
    """Write a store's features and predictions in OpenScene's formats (fused .pt, saved_feature .npy)."""
    from ovlift.pipeline.export import EXPORTS, export_store
    from ovlift.query import QueryError

    try:
        written = export_store(_open_store(store), out, _split(scenes), _split(what) or EXPORTS, plain_names)
    except (QueryError, UnsafeNameError, OSError) as err:
        _fail(str(err))
    console.print(f"wrote {len(written)} files under {out}")


@app.command()
def view(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    scene: Annotated[
        str | None, typer.Option("--scene", help="Scene to show first (default: one with features).")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port of the page (the next free one if taken).")] = 8080,
    host: Annotated[
        str,
        typer.Option("--host", help="Interface to listen on; beyond 127.0.0.1 anyone who reaches it sees the store."),
    ] = "127.0.0.1",
    html: Annotated[
        Path | None, typer.Option("--html", help="Write the scene as one self-contained HTML file instead of serving.")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="With --html: the features of the vocabulary's similarities.")
    ] = None,
) -> None:
    """Look at a scene in the browser: points coloured by RGB, by class or by similarity to a text
    typed into the page (docs/cli.md#look-at-a-scene). Serves until Ctrl-C; with --html writes one
    file that opens without a server."""
    from ovlift.query import QueryError
    from ovlift.viewer.session import ViewerError

    try:
        if html is not None:
            from ovlift.viewer.static_html import write_html

            console.print(f"wrote {write_html(_open_store(store), html, scene, source)}")
            return
        _serve_viewer(_open_store(store), scene, host, port)
    except (ViewerError, QueryError, UnsafeNameError) as err:
        _fail(str(err))


def _serve_viewer(store: Store, scene: str | None, host: str, port: int) -> None:
    import time

    from ovlift.network import is_loopback_host
    from ovlift.viewer.server import page_url, start

    if not is_loopback_host(host):
        err_console.print(
            f"[yellow]warning:[/yellow] listening on {escape(host)} (as asked): whoever reaches it can read "
            "every scene of the store (no TLS, no authentication)"
        )
    server = start(store, scene, host, port)
    console.print(f"ovlift view: {page_url(host, server.get_port())} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


@app.command()
def validate(
    plans: Annotated[list[Path], typer.Argument(help="Plan YAML files.", exists=True, dir_okay=False)],
    check_paths: Annotated[
        bool, typer.Option("--check-paths", help="Also require the data and model paths to exist.")
    ] = False,
    overrides: SetOpt = None,
) -> None:
    """Check plans without running anything: every config, the stages' inputs and the
    splits; with --check-paths also the dataset's scenes and every local path."""
    bad = 0
    for path in plans:
        try:
            plan = load_plan(path, check_paths=check_paths, list_scenes=check_paths, overrides=overrides or ())
        except PlanError as err:
            err_console.print(f"[red]invalid:[/red] {escape(str(err))}")
            bad += 1
            continue
        try:
            ids = (
                [check_name(s, f"{path}: dataset gives the scene id") for s in plan.dataset.scene_ids()]
                if check_paths
                else []
            )
        except UnsafeNameError as err:
            err_console.print(f"[red]invalid:[/red] {escape(str(err))}")
            bad += 1
            continue
        scenes = f", {len(ids)} scenes" if check_paths else ""
        console.print(f"[green]ok:[/green] {path} ({len(plan.stages)} stages{scenes})")
    if bad:
        raise typer.Exit(1)


@app.command()
def schema(
    check: Annotated[Path | None, typer.Option("--check", help="Exit 1 if this file differs from the specs.")] = None,
) -> None:
    """Print the cache layout document generated from the stage specs."""
    from ovlift.pipeline.schema_doc import render_schema_doc

    text = render_schema_doc()
    if check is None:
        sys.stdout.write(text)
        return
    if not check.is_file() or check.read_text() != text:
        err_console.print(f"{check} is out of date; regenerate it with: ovlift schema > {check}")
        raise typer.Exit(1)


@app.command("train-teachers")
def train_teachers(
    spec: Annotated[
        Path, typer.Argument(help="Teacher spec YAML (plans/teachers-toy.yaml).", exists=True, dir_okay=False)
    ],
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Only these teachers (repeat or comma-separate).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain even when the folder's fingerprint matches.")] = False,
) -> None:
    """Train the 2D teachers a spec lists, each into its model folder (config.json, model.safetensors,
    training.json, table.md); a teacher whose folder matches its training fingerprint is skipped."""
    from ovlift.pipeline.train_teachers import train_teachers as train

    try:
        train(spec, _split(only), force, echo=console.print)
    except PlanError as err:
        _fail(str(err))


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the store and outputs go.")] = Path("work/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="A seconds-long version (3 scenes, 2 epochs).")] = False,
) -> None:
    """The main job on generated toy rooms, end to end (plans/demo.yaml); a second run reuses the cache."""
    from ovlift.demo import run_demo

    _setup_logging("info")
    try:
        with logging_redirect_tqdm():
            run_demo(workdir, console, quick)
    except (FileNotFoundError, PlanError) as err:
        _fail(str(err))


if __name__ == "__main__":
    app()
