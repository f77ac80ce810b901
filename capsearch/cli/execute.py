"""Runs stages for the CLI with rich progress bars.

This is the one place where the CLI starts work: every command runs its stages as
a Prefect run of the ``pipeline`` flow (``flows.api.run``), so each CLI run shows
up in the Prefect UI, is cached batch by batch and resumes after a crash.
"""
from __future__ import annotations

from capsearch.cli.context import console
from capsearch.cli.progress import rich_progress
from pipeline.stages.base import BatchResult, StageReport
from pipeline.workspace import Workspace


def run_stages(ws: Workspace, names: list[str], captioners: list[str] | None = None, *,
               retry_failed: bool = False, verbose: bool = False, runner: str | None = None,
               dask_address: str | None = None) -> list[StageReport]:
    from flows.api import run

    with rich_progress(verbose) as progress:
        summary = run(ws, list(names) if names else None, captioners, progress=progress, retry_failed=retry_failed,
                      runner=runner, dask_address=dask_address)
    reports = [StageReport(o.stage, o.config_hash, BatchResult(o.done, o.failed, o.skipped, list(o.messages)),
                           o.seconds, o.ran, o.cached + o.unchanged) for o in summary.stages]
    for r in reports:
        if r.result.failed:
            console.print(f"[yellow]{r.stage}: {r.result.failed} items failed (see `capsearch status`)[/]")
    if summary.status == "cancelled":
        console.print("[yellow]run cancelled; finished batches are kept in the store[/]")
    return reports
