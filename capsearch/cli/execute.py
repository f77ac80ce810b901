"""Runs stages for the CLI with rich progress bars.

This is the one place where the CLI starts work: every command runs its stages as
a Prefect run of the ``pipeline`` flow (``flows.api.run``), so each CLI run shows
up in the Prefect UI, is cached batch by batch and resumes after a crash. The run
goes on in a worker thread while the main thread waits and handles SIGTERM, SIGINT
and SIGHUP (``pipeline.shutdown``): the run stops between batches and the command
exits with 128 + the signal's number.
"""
from __future__ import annotations

from capsearch.cli.context import console
from capsearch.cli.progress import rich_progress
from pipeline.stages.outcome import RunOutcome
from pipeline.states import Status
from pipeline.workspace import Workspace


def run_stages(ws: Workspace, names: list[str], captioners: list[str] | None = None, *,
               retry_failed: bool = False, verbose: bool = False, runner: str | None = None,
               dask_address: str | None = None, wait: bool = False) -> RunOutcome:
    """Run the stages as one run of the workspace: refused (with the running one's details) while another
    run holds the workspace, unless ``wait``: then it waits its turn, saying for what."""
    from pipeline import shutdown
    from flows.api import run
    from pipeline.run_lock import WaitCancelled

    def stopping(signum: int) -> None:
        console.print(f"[yellow]{shutdown.signal_name(signum)}: stopping after the batches in flight "
                      "(finished batches are kept; send it again to stop at once)[/]", highlight=False)

    def waiting(description: str) -> None:
        console.print(f"[yellow]another run is going on in {ws.root}: {description}[/]", highlight=False,
                      soft_wrap=True)
        console.print("waiting for it to end (Ctrl-C stops waiting) ...", highlight=False)

    try:
        with rich_progress(verbose) as progress:
            # In a worker thread: this thread handles stop signals (they cancel the run between batches).
            outcome = shutdown.run_cancellable(
                lambda cancel: run(ws, list(names) if names else None, captioners, progress=progress,
                                   retry_failed=retry_failed, runner=runner, dask_address=dask_address,
                                   cancel=cancel, wait=wait, on_wait=waiting),
                on_stop=stopping)
    except WaitCancelled as exc:
        console.print(f"[yellow]{exc}[/]", highlight=False)
        shutdown.raise_if_stopped()
        raise
    print_run_summary(outcome)
    if outcome.settled_without_prefect:
        stages = f"{len(outcome.stages)} stage" + ("" if len(outcome.stages) == 1 else "s")
        reused = outcome.reused_batches
        console.print(f"nothing to compute: {stages} up to date, {reused} batch{'' if reused == 1 else 'es'} reused "
                      f"({outcome.seconds:.1f} s)", highlight=False)
    for s in outcome.stages:
        if s.failed:
            console.print(f"[yellow]{s.stage}: {s.failed} items failed (see `capsearch status`)[/]")
    if outcome.status == Status.CANCELLED:
        console.print("[yellow]run cancelled; finished batches are kept in the store[/]")
    shutdown.raise_if_stopped()   # a stop signal ends the command here, with its exit code
    return outcome


def print_run_summary(outcome: RunOutcome) -> None:
    """One line per stage: how many items this run computed and how many it reused, or why the stage did not
    apply; for a stage that asked a model server, its tokens, cost and rates."""
    if not outcome.stages:
        return
    from rich.table import Table

    table = Table("stage", "computed", "reused", "failed", "", box=None, header_style="bold", pad_edge=False)
    said: set[str] = set()
    for s in outcome.stages:
        if s.status == Status.NOT_APPLICABLE:
            why = "as above" if s.reason in said else s.reason
            said.add(s.reason)
            table.add_row(s.stage, "–", "–", "–", f"[dim]not applicable: {why}[/]")
            continue
        failed = f"[red]{s.failed}[/]" if s.failed else "0"
        usage = f"[dim]{s.usage.describe(s.seconds)}[/]" if s.usage is not None else ""   # an endpoint captioner
        table.add_row(s.stage, f"{s.items:,}", f"{s.reused:,}", failed, usage)
    console.print(table)
