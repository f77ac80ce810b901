"""`capsearch run`, `capsearch server` and `capsearch serve`: the Prefect side of the CLI."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from capsearch.cli import context as cli
from capsearch.cli.context import CaptionersOpt, JsonOpt, WorkspaceOpt, console, err_console, progress_to_stderr

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
    detach: Annotated[bool, typer.Option(
        "--detach", "-d", help="Run outside this terminal (through `capsearch serve` when it serves the workspace, "
                               "else as a background process) and return at once.")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="When another run is going on in the workspace, wait for it to end instead of refusing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the pipeline (or the named stages) as a Prefect flow: cached per batch, resumable, shown in the UI."""
    from capsearch.cli.execute import run_stages
    from flows.runtime.settings import read_server_record

    ws = cli.workspace(workspace)
    captioners = cli.resolve_captioners(ws.config, captioner) if captioner else None
    if detach:
        _run_detached(ws, _split(stage), captioners, retry_failed, runner, address, wait)
        return
    with progress_to_stderr(as_json):
        outcome = run_stages(ws, _split(stage) or [], captioners, retry_failed=retry_failed, verbose=verbose,
                             runner=runner, dask_address=address, wait=wait)
    if as_json:
        print(json.dumps(outcome.as_dict(), indent=2))
        return
    if outcome.settled_without_prefect:
        return   # run_stages said "nothing to compute"
    ran, reused = outcome.ran_batches, outcome.reused_batches
    stages = f"{len(outcome.stages)} stage" + ("" if len(outcome.stages) == 1 else "s")
    batches = f"{ran} batch" + ("" if ran == 1 else "es")
    console.print(f"{stages}: {batches} computed, {reused} reused from the cache "
                  f"({sum(s.seconds for s in outcome.stages):.1f} s)")
    record = read_server_record()
    if record is not None and record.is_alive():
        console.print(f"runs: {record.ui_url}/runs", highlight=False)


def _run_detached(ws, stages: list[str] | None, captioners: list[str] | None, retry_failed: bool,
                  runner: str | None, address: str | None, wait: bool) -> None:
    from flows.runtime.detach import start_detached
    from flows.workspace_run import started_by_default

    detached = start_detached(ws, stages, captioners, retry_failed, started_by=started_by_default(), runner=runner,
                              dask_address=address, wait=wait)
    if detached.how == "deployment":
        console.print(f"started through `capsearch serve`: flow run {detached.flow_run_name} of "
                      f"{detached.deployment}", highlight=False)
        console.print(f"Prefect UI: {detached.ui_url}", highlight=False)
    else:
        console.print(f"started in the background: process {detached.pid}; its output goes to {detached.log_path}",
                      highlight=False)
    hint = f" -w {ws.root}"
    console.print(f"it goes on after this terminal closes. Watch it: capsearch{hint} status --follow (or the TUI); "
                  f"stop it: capsearch{hint} cancel", highlight=False, soft_wrap=True)


def cancel(
    workspace: WorkspaceOpt = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the run has stopped.")] = True,
) -> None:
    """Stop the run going on in the workspace after its batches in flight, whoever started it."""
    from flows.runtime.control import cancel_run, wait_for_end
    from pipeline.run_owner import owner_state

    ws = cli.workspace(workspace)
    request = cancel_run(ws)
    console.print(request.message, highlight=False, soft_wrap=True)
    if request.how == "none" or request.run is None or not wait:
        return
    console.print("stopping: waiting for it to finish its batches in flight and exit (Ctrl-C stops waiting; the run "
                  "stops anyway) ...", highlight=False, soft_wrap=True)
    final = wait_for_end(ws, request.run.id)     # its record ended and its process gone
    if final is not None:
        console.print(f"the run is {final.status}" + (f": {final.message}" if final.message else "")
                      + (f"; process {final.pid} has exited" if owner_state(final.owner) == "dead" else ""),
                      highlight=False, soft_wrap=True)


def server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API and UI.")] = 4200,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Allow a host other than loopback (the UI has no login: anyone who reaches it can start runs).")] = False,
) -> None:
    """Start Prefect's server and UI; capsearch runs started while it is up report to it."""
    from flows.runtime.server import check_host, start_server
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
    except KeyboardInterrupt:   # Ctrl-C, SIGTERM or SIGHUP (pipeline.shutdown.Stopped): stop the server, then exit
        console.print("stopping the Prefect server ...")
        raise
    finally:
        handle.stop()
    raise CapsearchError(f"the Prefect server exited with code {handle.process.returncode}; see {handle.log}")


def serve(
    workspace: WorkspaceOpt = None,
    cron: Annotated[Optional[str], typer.Option(help="Cron schedule (default: orchestration.schedule_cron).")] = None,
    timezone: Annotated[Optional[str], typer.Option(help="IANA time zone (default: orchestration.schedule_timezone).")] = None,
) -> None:
    """Register the nightly deployment (ingest new photos, caption, embed, evaluate, report) and run it on schedule."""
    from flows.deployments import build_deployments, serve as serve_deployments
    from flows.naming import on_demand_deployment_name
    from flows.runtime.detach import clear_serving, record_serving
    from flows.runtime.server import server_for_serve

    ws = cli.workspace(workspace)
    deployments = build_deployments(ws, cron, timezone)
    with server_for_serve(lambda text: console.print(text, highlight=False)) as url:
        for d in deployments:
            if d.schedules:
                sched = d.schedules[0].schedule
                console.print(f"deployment [bold]{d.flow_name}/{d.name}[/]: cron '{sched.cron}' ({sched.timezone}), "
                              f"workspace {ws.root}", highlight=False)
            else:
                console.print(f"deployment [bold]{d.flow_name}/{d.name}[/]: runs started from the TUI or "
                              "`capsearch run --detach`", highlight=False)
        ui_url = url.removesuffix("/api")

        def ready() -> None:
            record_serving(ws, url, ui_url, f"capsearch-pipeline/{on_demand_deployment_name(ws)}")
            console.print(f"Prefect UI: {ui_url}  - serving; Ctrl-C stops", highlight=False)

        try:
            serve_deployments(deployments, on_ready=ready)
        finally:
            clear_serving(ws)
        console.print("stopped serving")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("cancel")(cancel)
    app.command("server")(server)
    app.command("serve")(serve)
