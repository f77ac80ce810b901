"""PNG charts of an evaluation (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Callable

from pipeline.atomic import write_bytes
from pipeline.estimates import Estimate
from pipeline.evaluation import EvaluationResult
from pipeline.metric_facts import MRR, fact, recall_fact

K_COLOURS = ("#9ecae1", "#4292c6", "#08519c", "#08306b", "#041c40")
KIND_COLOURS = {"short": "#f28e2b", "detail": "#4e79a7"}
DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _label(result: EvaluationResult, method: str) -> str:
    return f"{method}\n(baseline)" if method == result.baseline else method


def error_bar(e: Estimate | None) -> tuple[float, float]:
    """How far an estimate's interval reaches below and above its value (0, 0 where it has none)."""
    if e is None or not e.known or not e.has_interval:
        return 0.0, 0.0
    return max(0.0, e.value - e.low), max(0.0, e.high - e.value)


def _save(fig, path: Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    data = buf.getvalue()
    if path is not None:
        write_bytes(path, data)
    return data


def _png(fig, path: Path | None) -> bytes:
    """The figure as PNG bytes (written to ``path`` too, when given); the figure is closed."""
    data = _save(fig, path)
    _pyplot().close(fig)
    return data


def _grouped_bars(ax, result: EvaluationResult, series: list[tuple[str, str, Callable[[str], Estimate | None]]],
                  annotate: bool = False) -> tuple[float, set[str]]:
    """One group of bars per method, one bar per series (label, colour, method -> its estimate). A value
    that is missing is not drawn as 0 but marked n/a; a zero value is annotated with its series' name. Returns
    the highest point drawn (bar plus interval) and the series that drew a visible bar."""
    methods = result.methods
    width = 0.8 / max(1, len(series))
    top, visible = 0.0, set()
    for j, (label, colour, get) in enumerate(series):
        xs, ys, low, high = [], [], [], []
        for i, method in enumerate(methods):
            e = get(method)
            known = e is not None and e.known
            value = e.value if known else math.nan
            xs.append(i + (j - (len(series) - 1) / 2) * width)
            ys.append(value)
            lo, hi = error_bar(e)
            low.append(lo)
            high.append(hi)
            if known:
                top = max(top, value + hi)
                if value > 0:
                    visible.add(label)
        bars = ax.bar(xs, [0.0 if math.isnan(y) else y for y in ys], width * 0.92, yerr=(low, high), capsize=3,
                      label=label, color=colour, error_kw={"elinewidth": 1, "ecolor": "#333333"})
        if annotate:
            for bar, y, hi in zip(bars, ys, high):
                text = "n/a" if math.isnan(y) else (f"{label} = 0" if y == 0 else f"{y:.2f}")
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, (0.0 if math.isnan(y) else y) + hi),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                            color="#333333", rotation=90 if text != "n/a" and y == 0 else 0)
    tilt = len(methods) > 4
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([_label(result, m) for m in methods], rotation=25 if tilt else 0,
                       ha="right" if tilt else "center", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return top, visible


def _scale_to_data(axes, top: float, ceiling: float | None) -> None:
    """The value axis from 0 to a little above the highest bar and interval (room for the labels), never past
    ``ceiling`` (a rate's 1, with the same room); a chart of values near 0.14 is not drawn on a scale to 1."""
    upper = max(top, 0.01) * 1.18
    if ceiling is not None:
        upper = min(upper, ceiling * 1.12)
    for ax in axes:
        ax.set_ylim(0, upper)


def _legend_below(fig, axes, visible: set[str]) -> None:
    """The series legend in one row under the plots, where it can never hide a bar: only series that drew a
    bar somewhere (a series whose every value is 0 or missing has its name on its bars instead)."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label in visible and label not in labels:
                handles.append(handle)
                labels.append(label)
    if labels:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels), fontsize=9,
                   frameon=False)


def _metric_getter(result: EvaluationResult, kind: str, metric: str) -> Callable[[str], Estimate | None]:
    def get(method: str) -> Estimate | None:
        r = result.get(method, kind)
        return r.metrics.get(metric) if r else None
    return get


def recall_figure(result: EvaluationResult):
    """Recall@K per method (grouped bars, one colour per K, CI error bars), one panel per query kind."""
    plt = _pyplot()
    recall = [m for m in result.metrics if m.startswith("R@")]
    kinds = result.kinds
    panel_w = max(4.8, 0.32 * len(result.methods) * max(1, len(recall)) + 1.6)
    stacked = len(result.methods) > 4          # wide panels go one under the other, so the page need not shrink them
    shape = (len(kinds), 1) if stacked else (1, len(kinds))
    size = (panel_w, 4.2 * len(kinds)) if stacked else (panel_w * len(kinds), 4.8)
    fig, grid = plt.subplots(*shape, figsize=size, squeeze=False, sharey=True)
    axes = list(grid.flat)
    top, visible = 0.0, set()
    for ax, kind in zip(axes, kinds):
        series = [(metric, K_COLOURS[j % len(K_COLOURS)], _metric_getter(result, kind, metric))
                  for j, metric in enumerate(recall)]
        high, shown = _grouped_bars(ax, result, series, annotate=True)
        top, visible = max(top, high), visible | shown
        ax.set_title(f"{kind} queries (n = {result.n_queries.get(kind, 0)})", fontsize=11)
    recall_k = fact(recall[0]) if recall else recall_fact(1)
    _scale_to_data(axes, top, recall_k.ceiling)
    for ax in (axes if stacked else axes[:1]):
        ax.set_ylabel(f"Recall@K ({recall_k.direction})")
    fig.suptitle(f"Recall@K with {round(result.confidence * 100)}% bootstrap intervals "
                 f"({result.n_targets} target photos)", fontsize=12)
    fig.tight_layout()
    _legend_below(fig, axes, visible)
    return fig


def recall_chart(result: EvaluationResult, path: Path | None = None) -> bytes:
    return _png(recall_figure(result), path)


def mrr_figure(result: EvaluationResult):
    """Mean reciprocal rank per method, one bar per query kind, with CI error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 0.55 * len(result.methods) * len(result.kinds) + 2)), 4.4))
    series = [(f"{kind} queries", KIND_COLOURS.get(kind, "#888888"), _metric_getter(result, kind, "MRR"))
              for kind in result.kinds]
    top, visible = _grouped_bars(ax, result, series, annotate=True)
    _scale_to_data([ax], top, MRR.ceiling)
    ax.set_ylabel(f"MRR ({MRR.direction})")
    ax.set_title(f"Mean reciprocal rank with {round(result.confidence * 100)}% bootstrap intervals", fontsize=12)
    fig.tight_layout()
    _legend_below(fig, [ax], visible)
    return fig


def mrr_chart(result: EvaluationResult, path: Path | None = None) -> bytes:
    return _png(mrr_figure(result), path)
