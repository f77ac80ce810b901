"""`capsearch status --follow`: the progress bars of the run going on in a workspace, from any shell.

The run (a `capsearch run` in another shell, a background run the TUI started, a run of a deployment)
writes its stages' progress and messages to the store (``pipeline.runs``); this reads them twice a second
and draws the same bars `capsearch run` draws, until the run ends.
"""
from __future__ import annotations

import time

from capsearch.cli.context import console
from capsearch.cli.progress import rich_progress
from pipeline.progress import EventKind, ProgressEvent
from pipeline.runs import RunInfo, RunWatch, current_run, describe_run
from pipeline.states import Status
from pipeline.workspace import Workspace

POLL = 0.5


def follow(ws: Workspace, verbose: bool = False, poll: float = POLL) -> RunInfo | None:
    """Show the current run's progress until it ends; returns its final record (None: nothing was running)."""
    store = ws.store
    run = current_run(store)
    if run is None:
        console.print(f"no run is going on in {ws.root}", highlight=False)
        return None
    console.print(f"following {describe_run(run)}", highlight=False, soft_wrap=True)
    watch = RunWatch(store, run.id)
    with rich_progress(verbose) as progress:
        while True:
            update = watch.poll()
            for line in update.lines:
                progress(ProgressEvent(line.stage, EventKind.MESSAGE, message=line.text, level=line.level))  # type: ignore[arg-type]
            for stage in update.stages:
                progress(stage.event())
            info = update.run
            if info is None or update.ended:
                break
            time.sleep(poll)
    status = info.status if info else "gone"
    took = f" after {_duration(info.seconds)}" if info else ""
    colour = {Status.COMPLETED: "green", Status.CANCELLED: "yellow"}.get(status, "red")
    console.print(f"[{colour}]the run {status}{took}[/]" + (f": {info.message}" if info and info.message else ""),
                  highlight=False, soft_wrap=True)
    return info


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
