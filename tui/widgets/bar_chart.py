"""A horizontal bar chart drawn with block characters, with confidence intervals as whiskers."""
from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from pipeline.estimates import Estimate
from pipeline.metric_facts import MetricFact, fact, metric_cell

_EIGHTHS = " ▏▎▍▌▋▊▉"


@dataclass(frozen=True)
class Bar:
    label: str
    estimate: Estimate


def render_bars(bars: list[Bar], width: int, maximum: float | None = None, metric: MetricFact | None = None) -> Text:
    """Bars scaled to ``maximum`` (default: the largest value or upper bound), one line each, the numbers written
    as ``metric``'s (``pipeline.metric_facts``)."""
    text = Text()
    bars = [b for b in bars if b.estimate.known]
    if not bars:
        return text
    metric = metric or fact("")
    digits = metric.digits
    label_w = min(max(len(b.label) for b in bars), max(8, width // 3))
    value_w = digits + 3
    ci_w = 2 * (metric.interval_digits + 3) + 4
    bar_w = max(4, width - label_w - value_w - ci_w - 4)
    top = maximum or max(max(b.estimate.value, b.estimate.high or 0.0) for b in bars) or 1.0
    for i, b in enumerate(bars):
        if i:
            text.append("\n")
        text.append(b.label[:label_w].ljust(label_w) + " ", style="bold")
        cell = metric_cell(metric.name, b.estimate)
        cells = max(0.0, min(1.0, b.estimate.value / top)) * bar_w
        full = int(cells)
        bar = "█" * full + (_EIGHTHS[int((cells - full) * 8)].strip() if full < bar_w else "")
        whisker = ""
        if b.estimate.has_interval:
            hi = min(bar_w, int(round(max(0.0, min(1.0, b.estimate.high / top)) * bar_w)))
            if hi > len(bar):
                whisker = "─" * (hi - len(bar) - 1) + "┤"
        text.append(bar, style="bright_cyan")
        text.append(whisker, style="cyan")
        text.append(" " * (bar_w - len(bar) - len(whisker)))
        text.append(f" {cell.value}")
        if cell.interval:
            text.append(f" {cell.interval}", style="dim")
    return text


class BarChart(Static):
    """Shows a list of ``Bar``s; re-renders to fit its width."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.bars: list[Bar] = []
        self.maximum: float | None = None
        self.metric: MetricFact | None = None

    def show(self, bars: list[Bar], maximum: float | None = None, metric: MetricFact | None = None) -> None:
        self.bars, self.maximum, self.metric = bars, maximum, metric
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        width = self.content_size.width or 60
        self.update(render_bars(self.bars, width, self.maximum, self.metric) if self.bars else "no results yet")
