"""Runs stages for the CLI with rich progress bars.

This is the one place where the CLI starts work, so that switching how stages
run (directly, or as Prefect flows) changes nothing else.
"""
from __future__ import annotations

from capsearch.cli.context import console
from capsearch.cli.progress import rich_progress
from pipeline.stages.base import StageReport, run_stage
from pipeline.stages.registry import pipeline_stages
from pipeline.workspace import Workspace


def run_stages(ws: Workspace, names: list[str], captioners: list[str] | None = None, *,
               retry_failed: bool = False, verbose: bool = False) -> list[StageReport]:
    reports = []
    with rich_progress(verbose) as progress:
        for stage in pipeline_stages(ws, names, captioners):
            reports.append(run_stage(stage, progress, retry_failed=retry_failed))
    for r in reports:
        if r.result.failed:
            console.print(f"[yellow]{r.stage}: {r.result.failed} items failed (see `capsearch status`)[/]")
    return reports
