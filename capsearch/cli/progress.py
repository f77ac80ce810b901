"""Rich progress bars fed by the pipeline's typed progress events."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)
from rich.text import Text

from capsearch.cli.context import console
from pipeline.progress import ProgressCallback, ProgressEvent


class RateColumn(ProgressColumn):
    """Items per second over what this stage run has processed since it started (``ProgressEvent.rate``).

    Not rich's own estimate, which measures from the first update, not from the start: a stage that spent 3 s
    loading a model and then reported its photos in two quick batches showed thousands of photos a second."""

    def render(self, task) -> Text:
        rate = task.fields.get("rate")
        return Text(f"{rate:6.1f}/s" if rate else "      -/s", style="cyan")


class EtaColumn(ProgressColumn):
    """Time left at the stage's own rate (``ProgressEvent.eta_seconds``)."""

    def render(self, task) -> Text:
        if task.finished:
            return Text("0:00:00", style="progress.remaining")
        eta = task.fields.get("eta")
        if eta is None:
            return Text("-:--:--", style="progress.remaining")
        minutes, seconds = divmod(int(eta), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


class RichProgress:
    """A ProgressCallback that draws one bar per stage and prints warnings above the bars."""

    def __init__(self, progress: Progress, verbose: bool = False):
        self.progress = progress
        self.verbose = verbose
        self.tasks: dict[str, int] = {}
        self.warnings = 0
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.kind == "message":
                if event.level != "info" or self.verbose:
                    style = {"warning": "yellow", "error": "red"}.get(event.level, "dim")
                    self.progress.console.print(f"[{style}]{event.stage}: {event.message}[/]", highlight=False)
                    self.warnings += event.level != "info"
                return
            if event.total <= 0 and event.kind == "start":
                return
            task = self.tasks.get(event.stage)
            if task is None:
                if event.total <= 0:
                    return
                task = self.progress.add_task(event.stage, total=event.total)
                self.tasks[event.stage] = task
            failures = f" [red]{event.failures} failed[/]" if event.failures else ""
            self.progress.update(task, total=max(event.total, 1), completed=event.done,
                                 description=f"{event.stage}{failures}", rate=event.rate, eta=event.eta_seconds)


@contextmanager
def rich_progress(verbose: bool = False) -> Iterator[ProgressCallback]:
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        RateColumn(), TimeElapsedColumn(), TextColumn("eta"), EtaColumn(),
        console=console, transient=False,
    )
    with progress:
        yield RichProgress(progress, verbose)
