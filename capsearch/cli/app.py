"""The `capsearch` command: set-up, data sets, status, and the pipeline stages."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from capsearch.cli import context as cli
from capsearch.cli import orchestration, text, ui, vision
from capsearch.cli.context import JsonOpt, WorkspaceOpt, console, err_console

if TYPE_CHECKING:
    from pipeline.status import StatusReport

app = typer.Typer(
    name="capsearch",
    help="Search a photo collection by text with captions written by vision-language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
data_app = typer.Typer(help="Data sets: the demo world, Flickr8k, or a folder of your photos.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")


@app.callback()
def root(
    workspace: WorkspaceOpt = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    cli.set_global(workspace, debug)


# -- init / config ---------------------------------------------------------------------------------------
@app.command()
def init(
    workspace: WorkspaceOpt = None,
    profile: Annotated[str, typer.Option(help="lite (no network, no GPU) or full (GPU box with the model hub).")] = "lite",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing capsearch.toml.")] = False,
) -> None:
    """Create a workspace with a commented capsearch.toml and an empty store."""
    from pipeline.config import PROFILES
    from pipeline.config_file import write_config_file
    from pipeline.errors import ConfigError

    if profile not in PROFILES:
        raise ConfigError(f"profile '{profile}' is not one of {', '.join(PROFILES)}")
    ws = cli.workspace(workspace, must_exist=False)
    ws.root.mkdir(parents=True, exist_ok=True)
    if ws.config_path.exists() and not force:
        console.print(f"[yellow]{ws.config_path} exists; left as it is (use --force to overwrite)[/]",
                      soft_wrap=True, highlight=False)      # a long path is not broken across lines
    else:
        write_config_file(ws.config_path, profile)
        console.print(f"wrote {ws.config_path} (profile {profile})", soft_wrap=True, highlight=False)
    ws.reload_config()
    ws.store  # creates and migrates the database
    console.print(f"store ready at {ws.db_path}")
    _after_init(ws)


def _after_init(ws) -> None:
    """Orchestration set-up: the Prefect database migrated once (Prefect is imported only here)."""
    from flows.runtime.server import prepare_prefect

    prepare_prefect(ws, console=console)


@config_app.command("show")
def config_show(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective configuration (profile defaults, file, environment) with secrets masked."""
    from pipeline.config import masked_secrets

    ws = cli.workspace(workspace, must_exist=False)
    cfg = ws.config
    data = cfg.model_dump(mode="json")
    secrets = masked_secrets()
    if as_json:
        print(json.dumps({"workspace": str(ws.root), "config_file": str(ws.config_path) if ws.config_path.exists() else None,
                          "config": data, "secrets": secrets}, indent=2))
        return
    from pipeline.config_file import _key, _toml_value

    def table(name: str, values: dict) -> None:
        """``[name]`` with its keys, then its tables (``[captioners.vlm-plain.endpoint]``) the same way."""
        console.print(f"\n[{name}]", highlight=False, markup=False)
        for key, value in values.items():
            if not isinstance(value, dict):
                console.print(f"{key} = {_toml_value(value)}", highlight=False, markup=False)
        for key, value in values.items():
            if isinstance(value, dict):
                table(f"{name}.{_key(key)}", value)

    source = str(ws.config_path) if ws.config_path.exists() else "no capsearch.toml: profile defaults"
    console.print(f"# workspace: {ws.root}\n# from: {source} + environment", highlight=False, markup=False)
    console.print(f"profile = {_toml_value(data.pop('profile'))}", highlight=False, markup=False)
    for section, values in data.items():
        table(section, values)
    console.print("\n# secrets (environment only)", highlight=False, markup=False)
    for name, state in secrets.items():
        console.print(f"# {name}: {state}", highlight=False, markup=False)


# -- data -----------------------------------------------------------------------------------------------------
@data_app.command("demo")
def data_demo(
    workspace: WorkspaceOpt = None,
    images: Annotated[Optional[int], typer.Option(help="Number of photos to generate (default: data.demo_images).")] = None,
    path: Annotated[Optional[Path], typer.Option(help="Where to write the demo world (default data/demo).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the generated world (default: data.demo_seed).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Generate again even if it exists.")] = False,
) -> None:
    """Generate the offline demo world (Flickr8k layout) and ingest it into the workspace."""
    from pipeline.config_file import update_config_file
    from pipeline.datasets.demo import demo_world_matches, generate_demo_world
    from pipeline.workspace import resolve_home_path

    ws = cli.workspace(workspace, must_exist=False)
    target = path or Path(ws.config.data.path if ws.config.data.source == "demo" else "data/demo")
    root = resolve_home_path(target)
    n = images or ws.config.data.demo_images
    seed = ws.config.data.demo_seed if seed is None else seed
    if force or not demo_world_matches(root, n, seed):
        from capsearch.cli.progress import rich_progress

        with rich_progress() as progress:
            summary = generate_demo_world(root, n_images=n, seed=seed, progress=progress)
        console.print(f"demo world: {summary.n_images} photos, {summary.n_captions} captions in {summary.root} "
                      f"({summary.seconds:.1f} s)")
    else:
        console.print(f"demo world already at {root} (use --force to generate again)")
    update_config_file(ws.config_path, {"data": {"source": "demo", "path": str(target), "demo_images": n, "demo_seed": seed}})
    ws.reload_config()
    _ingest(ws)


@data_app.command("flickr8k")
def data_flickr8k(
    workspace: WorkspaceOpt = None,
    path: Annotated[Path, typer.Option(help="Folder holding (or to receive) Flickr8k.")] = Path("data/flickr8k"),
    download: Annotated[bool, typer.Option("--download/--no-download", help="Download it when it is not there.")] = True,
    official_test: Annotated[bool, typer.Option("--official-test", help="Draw the targets from the official test list.")] = False,
) -> None:
    """Use Flickr8k: from a local folder in its usual layout, or downloaded (with resume and checksum)."""
    from pipeline.config_file import update_config_file
    from pipeline.datasets.flickr8k import MANUAL_DOWNLOAD_HELP, is_flickr8k_layout
    from pipeline.errors import DataError
    from pipeline.workspace import resolve_home_path

    ws = cli.workspace(workspace, must_exist=False)
    root = resolve_home_path(path)
    if not is_flickr8k_layout(root):
        if not download:
            raise DataError(f"no Flickr8k at {root}; " + MANUAL_DOWNLOAD_HELP.format(root=root))
        from capsearch.cli.progress import rich_progress
        from pipeline.datasets.download import download_flickr8k

        with rich_progress() as progress:
            download_flickr8k(root, progress=progress)
    update_config_file(ws.config_path, {"data": {"source": "flickr8k", "path": str(path), "official_test_targets": official_test}})
    ws.reload_config()
    _ingest(ws)


@data_app.command("folder")
def data_folder(
    path: Annotated[str, typer.Argument(help="Folder of photos (searched recursively), or a URL prefix: "
                                             "s3://bucket/prefix, gs://..., http(s)://...")],
    workspace: WorkspaceOpt = None,
    captions: Annotated[Optional[str], typer.Option(help="CSV, JSONL or Flickr8k-style token file with captions for some photos (a path or a URL).")] = None,
) -> None:
    """Use a folder of your own photos; captioned photos form the reference DB, the rest are the targets.
    Photos in object storage are read through fsspec, with credentials from the environment only."""
    from pipeline.config_file import update_config_file
    from pipeline.locations import is_url

    def where(p: str) -> str:
        return p if is_url(p) else str(Path(p).expanduser().resolve())

    ws = cli.workspace(workspace, must_exist=False)
    update_config_file(ws.config_path, {"data": {"source": "folder", "path": where(path),
                                                 "captions": where(captions) if captions else ""}})
    ws.reload_config()
    _ingest(ws)


def _ingest(ws) -> None:
    from capsearch.cli.execute import run_stages

    run_stages(ws, ["ingest"])
    store = ws.store
    n_ref, n_tgt = store.count_images("reference"), store.count_images("target")
    skipped = [p for p in store.problems() if p.severity == "skipped"]
    console.print(f"ingested {n_ref + n_tgt} photos into {ws.root}: {n_ref} reference DB, {n_tgt} targets"
                  + (f"; [yellow]{len(skipped)} items skipped (see `capsearch status`)[/]" if skipped else ""))


# -- status ---------------------------------------------------------------------------------------------------
@app.command()
def status(
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    problems_limit: Annotated[int, typer.Option("--problems", help="How many problems to list (0: all).")] = 20,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="First show the progress of the run going on in the workspace (whoever started it) "
                               "until it ends; exit code 1 unless it completed.")] = False,
) -> None:
    """Per stage: done, missing and failed items, with the reasons of failures and skipped input."""
    from pipeline.states import Status
    from pipeline.status import workspace_status

    ws = cli.workspace(workspace)
    followed = None
    if follow:
        from capsearch.cli.follow import follow as follow_run

        followed = follow_run(ws)
    report = workspace_status(ws)
    running = _current_run(ws)
    if as_json:
        print(json.dumps({**report.as_dict(), "current_run": running}, indent=2))
        if followed is not None and followed.status != Status.COMPLETED:
            raise typer.Exit(1)
        return
    from rich.table import Table

    images = report.images
    console.print(f"workspace {ws.root}  profile {report.profile}  "
                  f"photos {images.total} ({images.reference} reference, {images.target} targets)")
    table = Table("stage", "done", "missing", "failed", "total", "", title=None, box=None, header_style="bold")
    said: set[str] = set()
    for s in report.stages:
        if s.not_applicable:
            why = "as above" if s.not_applicable in said else s.not_applicable
            said.add(s.not_applicable)
            table.add_row(s.stage, "–", "–", "–", "–", f"[dim]not applicable: {why}[/]")
            continue
        table.add_row(s.stage, str(s.done), str(s.missing), f"[red]{s.failed}[/]" if s.failed else "0", str(s.total), "")
    console.print(table)
    _print_collection_notes(report, problems_limit)
    if running:
        console.print(f"\n[bold yellow]running now:[/] {running['description']}; `capsearch status --follow` shows its "
                      "progress, `capsearch cancel` stops it", highlight=False, soft_wrap=True)
    elif report.last_run is not None:
        colour = "yellow" if report.last_run.run.status == "cancelled" else "red"
        console.print(f"\n[bold {colour}]last run[/] {report.last_run.description}. Running it again computes only "
                      "what is missing", highlight=False, soft_wrap=True)
    problems = report.problems
    if problems:
        shown = problems if problems_limit == 0 else problems[:problems_limit]
        console.print(f"\n[bold]{len(problems)} problems[/] (skipped, failed or repaired items):")
        for p in shown:
            colour = {"skipped": "yellow", "failed": "red", "repaired": "cyan"}.get(p.severity, "white")
            console.print(f"  [{colour}]{p.severity:<8}[/] {p.stage:<14} {p.item}: {p.reason}",
                          highlight=False, soft_wrap=True)
        if len(shown) < len(problems):
            console.print(f"  ... and {len(problems) - len(shown)} more (--problems 0 lists all, --json prints them)")
    if followed is not None and followed.status != Status.COMPLETED:
        raise typer.Exit(1)


def _current_run(ws) -> dict | None:
    """The run going on in the workspace, if any (for `status`)."""
    from pipeline.runs import current_run, describe_run, run_progress

    run = current_run(ws.store)
    if run is None:
        return None
    stages = run_progress(ws.store, run.id)
    return {"id": run.id, "what": run.what, "started_by": run.started_by, "started_at": run.started_at,
            "pid": run.pid, "host": run.host, "flow_run_id": run.flow_run_id, "deployment": run.deployment,
            "log": run.log_path, "description": describe_run(run, stages),
            "stages": [{"stage": s.stage, "state": s.state, "done": s.done, "total": s.total, "failures": s.failures}
                       for s in stages]}


def _print_collection_notes(report: StatusReport, limit: int) -> None:
    """Duplicates kept out of prompts and consensus, and photos that left the collection."""
    dup = report.duplicates
    parts = []
    if dup.identical_photos:
        n = dup.identical_photos
        parts.append(f"{n} photo{' is an identical copy' if n == 1 else 's are identical copies'} of another "
                     "(kept on the same side of the split)")
    for n, what in ((dup.with_exact_duplicate_neighbour, "an identical copy"),
                    (dup.with_near_duplicate_neighbour, "a near-duplicate")):
        if n:
            parts.append(f"{n} photo{'' if n == 1 else 's'} {'has' if n == 1 else 'have'} {what} among its "
                         "neighbours (listed and marked; its captions are left out of prompts and consensus)")
    for part in parts:
        console.print(f"[cyan]duplicates:[/] {part}", highlight=False)
    for ix in report.indexes:
        recall = "not measured" if ix.recall_at_10 is None else f"{ix.recall_at_10:.3f}"
        console.print(f"[cyan]approximate index {ix.name}:[/] {ix.rows:,} vectors in {ix.lists:,} lists, "
                      f"{ix.probes} probed per query (index.probes); recall@10 {recall} against exact search; "
                      f"{ix.bytes / 2**20:.1f} MB, updated {ix.updated}", highlight=False)
    removed = report.removed
    if removed:
        console.print(f"\n[bold]{len(removed)} photos removed[/] from the collection (no longer searched):")
        ids = list(removed)
        shown = ids if limit == 0 else ids[:limit]
        for image_id in shown:
            console.print(f"  {image_id}", highlight=False, markup=False)
        if len(shown) < len(ids):
            console.print(f"  ... and {len(ids) - len(shown)} more (--problems 0 lists all, --json prints them)")


# -- demo -------------------------------------------------------------------------------------------------------
@app.command()
def demo(workspace: WorkspaceOpt = None) -> None:
    """The main job on the offline demo world (what `make demo` runs): every stage, lite profile."""
    from capsearch.cli.execute import run_stages
    from pipeline.config_file import write_config_file
    from pipeline.stages.registry import STAGE_ORDER

    ws = cli.workspace(workspace, must_exist=False)
    if not ws.config_path.exists():
        write_config_file(ws.config_path, "lite")
        ws.reload_config()
    stages = list(STAGE_ORDER)
    console.print(f"[bold]capsearch demo[/]: workspace {ws.root}, profile {ws.config.profile}, stages: {', '.join(stages)}")
    run_stages(ws, stages)
    status(workspace=ws.root, as_json=False, problems_limit=5)
    _print_results_summary(ws)


def _print_results_summary(ws) -> None:
    from capsearch.cli.summary import print_summary

    print_summary(ws)


for _commands in (vision, text, orchestration, ui):    # the command groups of the vision, text, runs and TUI areas
    _commands.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the command; exit 0, 1 on an error, 2 on a usage error, 128 + N when signal N stopped it.

    SIGTERM, SIGINT and SIGHUP stop a run between batches (``pipeline.shutdown``): the batches in
    flight finish and are kept, the stage run is recorded as cancelled, every process capsearch
    started is stopped. A second signal abandons the batches in flight and exits at once.
    """
    import logging

    from pipeline.environment import quiet_defaults

    quiet_defaults()
    from flows.runtime.settings import apply_settings
    from pipeline.shutdown import stop_on_signals

    apply_settings()                   # Prefect's home, logs to a file, the running `capsearch server`
    logging.raiseExceptions = False    # a library's logging error (Prefect's "Error logging to API") never
    # reaches the terminal: a run's failures are said once, by capsearch
    with stop_on_signals():
        code = _run_app(argv)
    sys.exit(code)


def _run_app(argv: list[str] | None) -> int:
    from pipeline.shutdown import Stopped, exit_code, signal_name, stop_requested
    from pipeline.errors import CapsearchError

    def stopped(signum: int) -> int:
        code = exit_code(signum)
        err_console.print(f"[yellow]stopped by {signal_name(signum)} (exit code {code})[/]", highlight=False)
        return code

    try:
        # Standalone mode: click/typer print usage errors and help themselves and exit with 2 / 0.
        app(args=argv, prog_name="capsearch")
    except SystemExit as exc:
        signum = stop_requested()
        if signum is not None:
            return stopped(signum)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except Stopped as exc:
        return stopped(exc.signum)
    except CapsearchError as exc:
        if cli.is_debug():
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted; finished batches are kept in the store[/]")
        return 130
    except Exception as exc:  # anything unexpected: one line unless --debug
        if cli.is_debug():
            raise
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc} [dim](run with --debug for the traceback)[/]",
                          highlight=False, soft_wrap=True)
        return 1
    return 0
