"""Caption metrics in the TUI: the summary table (metrics down, rows across) and one photo's scores."""
from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from pipeline.caption_metrics.views import CaptionMetricsView
from pipeline.metric_facts import fact, metric_cell, number
from tui.widgets.tables import estimate_text, fill_table

# what a caption column on the photo screen shows, when computed
PHOTO_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE", "CLIPScore", "RefCLIPScore", "copy rate",
                 "prompt overlap")


def fmt(metric: str, value: float | None) -> str:
    """One photo's score: ``0.545``; copy rate 0 or 1 in words; ``–`` where there is none."""
    if metric == "copy rate" and value in (0.0, 1.0):
        return "copied" if value else "own words"
    return number(value, fact(metric).digits)


def summary_cell(view: CaptionMetricsView, row: str, metric: str) -> Text:
    """``0.545 ±0.04``: the value and half the width of its interval."""
    return estimate_text(metric, view.result.get(row, metric) if view.result else None)


def photo_scores_text(scores: dict[str, float | None]) -> Text:
    """One caption's scores on one line each pair: ``CIDEr-D 0.545  METEOR 0.203 ...``."""
    text = Text()
    for metric in PHOTO_METRICS:
        if metric in scores:
            if text:
                text.append("  ")
            text.append(f"{metric} ", style="dim")
            text.append(fmt(metric, scores[metric]))
    return text


class CaptionMetricsPanel(Vertical):
    """The caption-metrics table of the Evaluation screen, with the highlighted metric's details (``show``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view = CaptionMetricsView(None)

    def compose(self) -> ComposeResult:
        yield Static("loading the caption metrics…", id="caption-metrics-title")
        yield DataTable(id="caption-metrics", cursor_type="row", zebra_stripes=True)
        yield Static("", id="caption-metrics-detail")

    def show(self, view: CaptionMetricsView) -> None:
        """Show ``view`` (the Evaluation screen reads it from the store)."""
        self.view = v = view
        title = self.query_one("#caption-metrics-title", Static)
        if v.result is None:
            title.update(Text("no caption metrics yet: run the caption-metrics stage (or `capsearch evaluate`)",
                              style="yellow"))
            return
        r = v.result
        head = Text()
        head.append("caption metrics", style="bold")
        head.append(f" · {r.n_photos} photos · ± half the {round(r.confidence * 100)}% interval"
                    + (f" · Δ vs {r.baseline} below" if r.baseline else ""), style="dim")
        if v.stale:
            head.append(" · from an earlier configuration", style="yellow")
        title.update(head)
        columns = [("metric", "metric")] + [(row, row + (" (baseline)" if row == r.baseline else "")) for row in r.rows]
        rows = [(Text(m), *[summary_cell(v, row, m) for row in r.rows]) for m in r.metrics]
        fill_table(self.query_one("#caption-metrics", DataTable), columns, rows, r.metrics)
        self._detail()

    @on(DataTable.RowHighlighted, "#caption-metrics")
    def _highlighted(self) -> None:
        self._detail()

    def _detail(self) -> None:
        r = self.view.result
        if r is None or not r.metrics:
            return
        row_index = self.query_one("#caption-metrics", DataTable).cursor_row
        metric = r.metrics[min(max(row_index, 0), len(r.metrics) - 1)]
        m = fact(metric)
        text = Text()
        text.append(metric, style="bold")
        text.append(f": {m.description}" if m.description else "", style="dim")
        for row in r.rows:
            c = metric_cell(metric, r.get(row, metric), r.difference(row, metric))
            if c is None:
                continue
            text.append(f"\n{row} ", style="bold")
            text.append(c.value)
            if c.interval:
                text.append(f" {c.interval}", style="dim")
            if c.delta is not None:
                text.append(f"  vs {r.baseline} {c.delta}")
                text.append(f" p={c.p}", style="dim")
        for row, reason in r.rows_not_applicable().items():
            text.append(f"\n{row}", style="bold")
            text.append(" not applicable: ", style="yellow")
            text.append(reason, style="dim")
        for metrics, reason in r.not_computed():
            text.append(f"\n{', '.join(metrics)} not computed: {reason}", style="dim")
        self.query_one("#caption-metrics-detail", Static).update(text)
