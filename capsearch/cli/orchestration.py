"""`capsearch run`, `capsearch server` and `capsearch serve`: the Prefect side of the CLI."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Annotated, Iterator, Optional

import typer

from capsearch.cli import context as ctx
from capsearch.cli.context import CaptionersOpt, WorkspaceOpt, console, err_console

StageOpt = Annotated[Optional[list[str]], typer.Option(
    "--stage", "-s", help="Stage to run (repeat or comma-separate; default: every stage in pipeline order).")]
RunnerOpt = Annotated[Optional[str], typer.Option(
    "--runner", help="thread (default) or dask: caption and embedding batches on a Dask cluster.")]
AddressOpt = Annotated[Optional[str], typer.Option(
    "--address", help="tcp://host:port of an existing Dask scheduler (default: start a local cluster).")]


def _split(values: list[str] | None) -> list[str] | None:
    out = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
    return out or None


def run(
    workspace: WorkspaceOpt = None,
    stage: StageOpt = None,
    captioner: CaptionersOpt = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try failed items again.")] = False,
    runner: RunnerOpt = None,
    address: AddressOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every stage message.")] = False,
) -> None:
    """Run the pipeline (or the named stages) as a Prefect flow: cached per batch, resumable, shown in the UI."""
    from capsearch.cli.execute import run_stages
    from flows.settings import read_server_record

    ws = ctx.workspace(workspace)
    if runner == "dask" or (runner is None and ws.config.orchestration.runner == "dask"):
        record = read_server_record()
        if not os.environ.get("PREFECT_API_URL") and (record is None or not record.is_alive()):
            err_console.print("[yellow]the dask runner needs a Prefect server its workers can reach; starting a "
                              "temporary one for this run (keep one with `capsearch server`)[/]")
    captioners = ctx.resolve_captioners(ws.config, captioner) if captioner else None
    reports = run_stages(ws, _split(stage) or [], captioners, retry_failed=retry_failed, verbose=verbose,
                         runner=runner, dask_address=address)
    ran = sum(r.batches_run for r in reports)
    reused = sum(r.batches_skipped for r in reports)
    stages = f"{len(reports)} stage" + ("" if len(reports) == 1 else "s")
    batches = f"{ran} batch" + ("" if ran == 1 else "es")
    console.print(f"{stages}: {batches} computed, {reused} reused from the cache "
                  f"({sum(r.seconds for r in reports):.1f} s)")
    record = read_server_record()
    if record is not None and record.is_alive():
        console.print(f"runs: {record.ui_url}/runs", highlight=False)


def server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API and UI.")] = 4200,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Allow a host other than loopback (the UI has no login: anyone who reaches it can start runs).")] = False,
) -> None:
    """Start Prefect's server and UI; capsearch runs started while it is up report to it."""
    from flows.server import check_host, start_server
    from pipeline.errors import CapsearchError

    warning = check_host(host, allow_remote)
    if warning:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    console.print(f"starting the Prefect server on {host}:{port} ...")
    handle = start_server(host, port, allow_remote=allow_remote)
    console.print(f"Prefect UI: [bold]{handle.record.ui_url}[/]  (API {handle.record.api_url})", highlight=False)
    console.print(f"capsearch runs now report to it; server log: {handle.log}. Ctrl-C stops it.", highlight=False)
    try:
        handle.process.wait()
    except KeyboardInterrupt:   # Ctrl-C, SIGTERM or SIGHUP (flows.shutdown.Stopped): stop the server, then exit
        console.print("stopping the Prefect server ...")
        raise
    finally:
        handle.stop()
    raise CapsearchError(f"the Prefect server exited with code {handle.process.returncode}; see {handle.log}")


@contextmanager
def _server_for_serve() -> Iterator[str]:
    """The configured Prefect server, or one started for as long as `serve` runs (schedules need one)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    from flows.server import start_server
    from flows.setup import free_port

    console.print("no Prefect server is running: starting one for as long as `capsearch serve` runs")
    try:
        handle = start_server("127.0.0.1", 4200)
    except Exception:  # noqa: BLE001 - port 4200 taken: any free port will do
        handle = start_server("127.0.0.1", free_port())
    os.environ["PREFECT_API_URL"] = handle.record.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: handle.record.api_url}):
            yield handle.record.ui_url
    finally:
        handle.stop()


def serve(
    workspace: WorkspaceOpt = None,
    cron: Annotated[Optional[str], typer.Option(help="Cron schedule (default: orchestration.schedule_cron).")] = None,
    timezone: Annotated[Optional[str], typer.Option(help="IANA time zone (default: orchestration.schedule_timezone).")] = None,
) -> None:
    """Register the nightly deployment (ingest new photos, caption, embed, evaluate, report) and run it on schedule."""
    import flows  # noqa: F401 - Prefect settings first
    from flows.deployments import build_deployments, serve as serve_deployments

    ws = ctx.workspace(workspace)
    deployments = build_deployments(ws, cron, timezone)
    with _server_for_serve() as url:
        for d in deployments:
            sched = d.schedules[0].schedule
            console.print(f"deployment [bold]{d.flow_name}/{d.name}[/]: cron '{sched.cron}' ({sched.timezone}), "
                          f"workspace {ws.root}", highlight=False)
        serve_deployments(deployments, on_ready=lambda: console.print(
            f"Prefect UI: {url.removesuffix('/api')}  - serving; Ctrl-C stops", highlight=False))
        console.print("stopped serving")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("server")(server)
    app.command("serve")(serve)
