"""Live progress of a run: one row per stage with its name, a bar, and counts, rate, ETA and failures.

The counts, rate and ETA keep their width; the bar takes what is left (``capsearch.tcss``), so a narrow terminal
loses decoration first: at 80 columns every number is still there."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Label, ProgressBar

from pipeline.progress import ProgressEvent


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(event: ProgressEvent) -> str:
    """``12/80 · 3.1/s · ETA 0:22 · 1 failed`` for one event (``· 950 tok/s`` after the rate for a stage that asks a
    model server)."""
    if event.kind == "not-applicable":
        return f"not applicable: {event.message}"
    if event.kind == "finish" and not event.total and not event.done:
        return "nothing to do"
    parts = [f"{event.done}/{event.total}" if event.total else f"{event.done}"]
    if event.kind == "finish":
        parts.append("done")
    else:
        rate = event.rate
        parts.append(f"{rate:.1f}/s" if rate else "-/s")
        if event.token_rate:   # a stage that asks a model server: its tokens per second
            parts.append(f"{event.token_rate:,.0f} tok/s")
        parts.append(f"ETA {format_seconds(event.eta_seconds)}")
    if event.failures:
        parts.append(f"{event.failures} failed")
    return " · ".join(parts)


class StageBar(Horizontal):
    """One stage: its name, a ProgressBar and a stats line."""

    def __init__(self, stage: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stage = stage
        self.event: ProgressEvent | None = None

    def compose(self) -> ComposeResult:
        yield Label(self.stage, classes="stage-name")
        yield ProgressBar(total=None, show_eta=False, show_percentage=False)   # the counts say how far
        yield Label("", classes="stage-stats")

    def on_mount(self) -> None:
        if self.event is not None:
            self._apply(self.event)

    def update_event(self, event: ProgressEvent) -> None:
        self.event = event
        if self.is_mounted:
            self._apply(event)

    def _apply(self, event: ProgressEvent) -> None:
        bar = self.query_one(ProgressBar)
        if event.total:
            bar.update(total=event.total, progress=event.done)
        elif event.kind in ("finish", "not-applicable"):
            bar.update(total=1, progress=1)
        self.query_one(".stage-stats", Label).update(progress_line(event))
        self.set_class(event.kind in ("finish", "not-applicable"), "-finished")
        self.set_class(event.failures > 0, "-failures")
        self.set_class(event.kind == "not-applicable", "-not-applicable")


class ProgressPanel(VerticalScroll):
    """The stages of the current run, in the order they started."""

    def bar_for(self, stage: str) -> StageBar:
        for bar in self.query(StageBar):
            if bar.stage == stage:
                return bar
        bar = StageBar(stage)
        self.mount(bar)
        return bar

    def bar_event(self, stage: str) -> ProgressEvent | None:
        """The last event shown for ``stage`` (None: no bar yet)."""
        for bar in self.query(StageBar):
            if bar.stage == stage:
                return bar.event
        return None

    def show_event(self, event: ProgressEvent) -> None:
        if event.kind == "message":
            return
        self.bar_for(event.stage).update_event(event)

    def reset(self) -> None:
        self.remove_children()

    @property
    def stages(self) -> list[str]:
        return [bar.stage for bar in self.query(StageBar)]
