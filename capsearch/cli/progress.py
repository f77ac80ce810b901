"""Rich progress bars fed by the pipeline's typed progress events."""
from __future__ import annotations

import threading
import time
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
        text = Text(f"{rate:6.1f}/s" if rate else "      -/s", style="cyan")
        tokens = task.fields.get("token_rate")
        if tokens:   # a stage that asks a model server (an endpoint captioner): its tokens per second too
            text.append(f" {tokens:7,.0f} tok/s", style="cyan")
        return text


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
                                 description=f"{event.stage}{failures}", rate=event.rate, eta=event.eta_seconds,
                                 token_rate=event.token_rate)


class LineProgress:
    """Progress as plain lines, for output that is not a terminal (a background run's log, a pipe, nohup):
    a line when a stage starts, every ``interval`` seconds while it runs, and when it finishes."""

    def __init__(self, out, verbose: bool = False, interval: float = 30.0):
        self.out = out
        self.verbose = verbose
        self.interval = interval
        self.warnings = 0
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        self.out.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, markup=False, soft_wrap=True)

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.kind == "message":
                if event.level != "info" or self.verbose:
                    self._print(f"{event.stage}: {event.level}: {event.message}" if event.level != "info"
                                else f"{event.stage}: {event.message}")
                    self.warnings += event.level != "info"
                return
            now = time.monotonic()
            if event.kind == "start":
                if event.total > 0 and event.stage not in self._last:
                    self._last[event.stage] = now
                    self._print(f"{event.stage}: {event.total} to do")
                return
            if event.kind == "finish":
                self._last.pop(event.stage, None)
                self._print(event.message or f"{event.stage}: {event.done} done")
                return
            if event.total <= 0:
                return
            if event.stage not in self._last or now - self._last[event.stage] >= self.interval:
                self._last[event.stage] = now
                rate = f", {event.rate:.1f}/s" if event.rate else ""
                rate += f", {event.token_rate:,.0f} tok/s" if event.token_rate else ""
                failed = f", {event.failures} failed" if event.failures else ""
                self._print(f"{event.stage}: {event.done}/{event.total}{failed}{rate}")


@contextmanager
def rich_progress(verbose: bool = False) -> Iterator[ProgressCallback]:
    """Progress bars on a terminal; plain lines where the output is not one (a log file, a pipe)."""
    if not console.is_terminal and not console.is_jupyter:
        yield LineProgress(console, verbose)
        return
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        RateColumn(), TimeElapsedColumn(), TextColumn("eta"), EtaColumn(),
        console=console, transient=False,
    )
    with progress:
        yield RichProgress(progress, verbose)
