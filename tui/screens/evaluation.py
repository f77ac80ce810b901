"""Evaluation: Recall@K, MRR and median rank per method and query kind with confidence intervals, a bar
chart, and a drill-down into the queries a method missed (``tui.screens.missed``); c shows the caption metrics."""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from pipeline.browse import Browser, EvaluationTable
from pipeline.caption_metrics.views import caption_metrics_view
from pipeline.metric_facts import DASH, Direction, fact, metric_cell
from pipeline.store_rows import EvaluationRow
from tui.cycle import cycle
from tui.messages import CaptionMetricsLoaded
from tui.screens.base import CapsearchScreen
from tui.screens.missed import MissedScreen
from tui.widgets.bar_chart import Bar, BarChart
from tui.widgets.caption_metrics import CaptionMetricsPanel
from tui.widgets.tables import estimate_text, fill_table


def cell(value: EvaluationRow | None, metric: str, spread: bool = True) -> Text:
    """``0.433 ±0.08``: the value and half the width of its interval (``spread``; on a narrow screen the value
    alone, the line under the table giving the highlighted method's intervals)."""
    return estimate_text(metric, value.estimate if value else None, spread)


def interval(value: EvaluationRow, metric: str) -> str:
    """``0.433 [0.37, 0.50]``."""
    c = metric_cell(metric, value.estimate)
    return DASH if c is None else f"{c.value} {c.interval}".rstrip()


class EvaluationLoaded(Message):
    """The evaluation; when there is none, why (``not_applicable``: the evaluate stage does not apply)."""

    def __init__(self, table: EvaluationTable, not_applicable: str | None = None) -> None:
        super().__init__()
        self.table = table
        self.not_applicable = not_applicable


def not_applicable_text(table: EvaluationTable) -> Text:
    """One line per method that has nothing to rank: no value, no interval, no test; why."""
    text = Text()
    for method, reason in table.not_applicable.items():
        if text:
            text.append("\n")
        text.append(method, style="bold")
        text.append(" not applicable: ", style="yellow")
        text.append(reason, style="dim")
    return text


class EvaluationScreen(CapsearchScreen):
    MODE = "evaluation"
    HELP = ("Metrics per method for one query kind, with 95% bootstrap intervals (± is half the interval; the "
            "line under the table gives it in full and the difference to the baseline). Enter lists the queries "
            "the highlighted method missed. c switches to the caption metrics (BLEU, METEOR, ROUGE-L, CIDEr-D, "
            "CLIPScore, copy rate... per captioner and the human baseline).")
    BINDINGS = [
        Binding("enter", "drill", "Missed queries", tooltip="the queries the highlighted method missed"),
        Binding("k", "next_kind", "Query kind", tooltip="show the next query kind (short, detail)"),
        Binding("b", "next_metric", "Chart metric", tooltip="chart the next metric"),
        Binding("c", "toggle_captions", "Caption metrics", tooltip="switch between retrieval and caption metrics"),
        Binding("u", "refresh", "Refresh", show=False, tooltip="read the evaluation from the store again"),
    ]
    LOADING_LINES = {"evaluation": "#eval-title", "caption-metrics": "#caption-metrics-title"}

    def __init__(self) -> None:
        super().__init__()
        self.table: EvaluationTable | None = None
        self.kind = ""
        self.chart_metric = ""

    def compose_body(self) -> ComposeResult:
        with Vertical(id="evaluation-body"):
            yield Static("loading the evaluation…", id="eval-title")
            yield DataTable(id="metrics", cursor_type="row", zebra_stripes=True)
            yield Static("", id="eval-detail")
            yield Static("", id="chart-title")
            yield BarChart(id="chart")
        yield CaptionMetricsPanel(id="caption-metrics-body", classes="-hidden")

    def on_mount(self) -> None:
        self.query_one("#metrics", DataTable).focus()
        self._load()

    def action_toggle_captions(self) -> None:
        panel = self.query_one(CaptionMetricsPanel)
        showing = panel.has_class("-hidden")
        panel.set_class(not showing, "-hidden")
        self.query_one("#evaluation-body").set_class(showing, "-hidden")
        if showing:
            self._load_caption_metrics()
            panel.query_one(DataTable).focus()
        else:
            self.query_one("#metrics", DataTable).focus()

    @work(thread=True, group="evaluation", exclusive=True, exit_on_error=False,
          description="reading the evaluation")
    def _load(self) -> None:
        table = Browser(self.ws).evaluation()
        reason = None
        if table.empty:
            from pipeline.applicability import no_held_out_captions

            reason = no_held_out_captions(self.ws.store)
        self.post_message(EvaluationLoaded(table, reason))

    @work(thread=True, group="caption-metrics", exclusive=True, exit_on_error=False,
          description="reading the caption metrics")
    def _load_caption_metrics(self) -> None:
        self.post_message(CaptionMetricsLoaded(caption_metrics_view(self.ws)))

    @on(CaptionMetricsLoaded)
    def _caption_metrics_loaded(self, message: CaptionMetricsLoaded) -> None:
        self.query_one(CaptionMetricsPanel).show(message.view)

    @on(EvaluationLoaded)
    def _loaded(self, message: EvaluationLoaded) -> None:
        self.table = t = message.table
        if t.empty:
            self.query_one("#eval-title", Static).update(
                Text(f"no evaluation: not applicable here: {message.not_applicable}", style="yellow")
                if message.not_applicable else
                Text("no method could be evaluated", style="yellow") if t.not_applicable else
                Text("no evaluation yet: run the pipeline (screen 1, key a) or the evaluate stage", style="yellow"))
            self.query_one("#eval-detail", Static).update(not_applicable_text(t))
            return
        if self.kind not in t.kinds:
            self.kind = t.kinds[0]
        if self.chart_metric not in t.metrics:
            self.chart_metric = next((m for m in t.metrics if m == "R@10"), t.metrics[0])
        self._draw()

    def _draw(self) -> None:
        t = self.table
        if t is None or t.empty:
            return
        first = next((v for (m, k, _), v in t.values.items() if k == self.kind), None)
        n = first.n if first else 0
        narrow = self.narrow  # intervals and the word "baseline" would push the last columns off a narrow screen
        title = Text()
        if narrow:
            title.append(self.kind, style="bold")
            title.append(f" queries ({n}; k: next kind) · * baseline · intervals below", style="dim")
        else:
            title.append("query kind ", style="dim")
            title.append(self.kind, style="bold")
            title.append(f" ({', '.join(t.kinds)}; k cycles) · {n} queries", style="dim")
        if t.stale:
            title.append(" · from an earlier configuration", style="yellow")
        self.query_one("#eval-title", Static).update(title)
        baselines = {v.baseline for v in t.values.values() if v.baseline}
        rows = []
        for method in t.methods:
            label = Text(method)
            if method in baselines:
                label.append("*" if narrow else " (baseline)", style="dim")
            rows.append((label, *[cell(t.get(method, self.kind, m), m, spread=not narrow) for m in t.metrics]))
        fill_table(self.query_one("#metrics", DataTable), [("method", "method"), *[(m, m) for m in t.metrics]],
                   rows, t.methods)
        self._detail()
        self._chart()

    def _chart(self) -> None:
        t = self.table
        metric = self.chart_metric
        f = fact(metric)
        bars = [Bar(m, v.estimate) for m in t.methods if (v := t.get(m, self.kind, metric)) is not None]
        title = Text()
        title.append(metric, style="bold")
        title.append(f" per method, {self.kind} queries" + (f" ({f.direction})" if f.direction is Direction.LOWER else "")
                     + " · b cycles", style="dim")
        self.query_one("#chart-title", Static).update(title)
        self.query_one("#chart", BarChart).show(bars, f.ceiling, f)

    def _selected_method(self) -> str | None:
        if self.table is None or self.table.empty:
            return None
        row = self.query_one("#metrics", DataTable).cursor_row
        return self.table.methods[row] if 0 <= row < len(self.table.methods) else None

    def _detail(self) -> None:
        method = self._selected_method()
        if method is None:
            return
        t = self.table
        text = Text()
        text.append(method, style="bold")
        for metric in t.metrics:
            v = t.get(method, self.kind, metric)
            if v is not None:
                text.append(f"  {metric} ", style="dim")
                text.append(interval(v, metric))
        metric = self.chart_metric
        v = t.get(method, self.kind, metric)
        c = metric_cell(metric, v.estimate, v.vs_baseline) if v is not None and v.baseline != method else None
        if c is not None and c.delta is not None:
            text.append(f"\nvs {v.baseline}: {metric} {c.delta}", style="")
            if c.delta_interval:
                text.append(f" {c.delta_interval}", style="dim")
            text.append(f" p={c.p}", style="dim")
        if t.not_applicable:
            text.append("\n")
            text.append_text(not_applicable_text(t))
        self.query_one("#eval-detail", Static).update(text)

    @on(DataTable.RowHighlighted, "#metrics")
    def _highlighted(self) -> None:
        self._detail()

    def on_resize(self) -> None:
        self._draw()          # narrow and wide screens show the table differently

    @on(DataTable.RowSelected, "#metrics")
    def _selected(self) -> None:
        self.action_drill()

    def action_next_kind(self) -> None:
        if self.table is not None and not self.table.empty:
            self.kind = cycle(self.table.kinds, self.kind)
            self._draw()

    def action_next_metric(self) -> None:
        if self.table is not None and not self.table.empty:
            self.chart_metric = cycle(self.table.metrics, self.chart_metric)
            self._chart()
            self._detail()

    def action_refresh(self) -> None:
        self.reload()

    def reload(self) -> None:
        self._load()
        panel = self.query_one(CaptionMetricsPanel)
        if not panel.has_class("-hidden"):
            self._load_caption_metrics()

    def action_drill(self) -> None:
        if self.query_one("#evaluation-body").has_class("-hidden"):
            return                      # the caption metrics are shown: no retrieval method is highlighted
        method = self._selected_method()
        if method is not None:
            ks = [int(m[2:]) for m in self.table.metrics if m.startswith("R@") and m[2:].isdigit()]
            self.app.push_screen(MissedScreen(method, self.kind, max(ks) if ks else 10))
