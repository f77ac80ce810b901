"""The caption-metrics part of the reports: JSON, CSV rows, a chart, an HTML section, and how well each
per-photo caption score predicts the photo's retrieval rank (Spearman's rho per captioner and metric)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.caption_metrics.results import HUMAN, CaptionMetricsResult, RowScores, worst_first_key
from pipeline.metric_facts import fact, number

if TYPE_CHECKING:
    from pipeline.evaluation import EvaluationResult
    from pipeline.workspace import Workspace

CHART_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE", "CLIPScore", "RefCLIPScore", "copy rate")
WORST_SHOWN = 5
# what the "worst captions" list ranks by: the first quality measure computed (never length or copy rate, which
# describe a caption without judging it); CIDEr-D first, the consensus measure made for image captions
WORST_BY = ("CIDEr-D", "SPICE", "METEOR", "BLEU-4", "ROUGE-L", "RefCLIPScore", "CLIPScore")


@dataclass
class Correlation:
    """Per captioner and metric: Spearman's rho between the photo's caption score and its retrieval rank
    (the mean expected rank of the photo over its evaluation queries; negative: higher scores, better ranks)."""

    eval_hash: str
    n_photos: dict[str, int] = field(default_factory=dict)
    rho: dict[str, dict[str, float | None]] = field(default_factory=dict)     # row -> metric -> rho


def correlation(ws: "Workspace", result: CaptionMetricsResult, rows: dict[str, RowScores],
                evaluation: "EvaluationResult") -> Correlation:
    from pipeline.caption_metrics.stats import spearman

    out = Correlation(evaluation.eval_hash)
    for row in result.rows:
        if row == HUMAN or row not in evaluation.methods or row not in rows:
            continue
        ranks: dict[str, list[float]] = {}
        for r in ws.store.rankings(evaluation.eval_hash, method=row):
            ranks.setdefault(r.image_id, []).append(float(r.rank))
        scored = rows[row]
        keep = [n for n, i in enumerate(scored.ids) if i in ranks]
        mean_rank = [sum(ranks[scored.ids[n]]) / len(ranks[scored.ids[n]]) for n in keep]
        out.n_photos[row] = len(keep)
        out.rho[row] = {}
        for metric in result.metrics:
            values = scored.scores.get(metric)
            if not fact(metric).per_photo or values is None:
                continue
            x = [math.nan if values[n] is None else float(values[n]) for n in keep]
            rho = spearman(x, mean_rank) if keep else math.nan
            out.rho[row][metric] = None if math.isnan(rho) else rho
    return out


def worst_photos(rows: dict[str, RowScores], row: str, metric: str, n: int) -> list[tuple[str, float, str]]:
    """The ``n`` worst (photo id, score, caption) of a row by a metric (ties by photo id)."""
    scored = rows.get(row)
    if scored is None or metric not in scored.scores:
        return []
    values = scored.scores[metric]
    order = sorted(range(len(scored.ids)), key=lambda k: worst_first_key(metric, values[k], scored.ids[k]))
    return [(scored.ids[k], values[k], scored.captions[k]) for k in order[:n] if values[k] is not None]


# -- JSON and CSV ------------------------------------------------------------------------------------------------

def caption_metrics_json(result: CaptionMetricsResult | None, corr: Correlation | None = None) -> dict[str, Any] | None:
    if result is None:
        return None
    out = result.as_dict()
    out["rows_not_applicable"] = result.rows_not_applicable()
    out.pop("row_hashes", None)
    out.pop("n", None)          # photos per cell: in the store (caption_metric_values.n), not in the JSON
    if corr is not None:
        out["retrieval_correlation"] = {"eval_hash": corr.eval_hash, "n_photos": corr.n_photos, "spearman": corr.rho}
    return out


def caption_metric_records(result: CaptionMetricsResult) -> list[dict[str, Any]]:
    """metrics.csv rows: method = the row, query_kind = 'caption', n_queries = photos scored."""
    from pipeline.reports.tables import metric_record

    return [metric_record(row, "caption", metric, estimate, result.difference(row, metric), result.baseline,
                          result.n_photos, result.missing.get(row, 0), result.n_photos)
            for row in result.rows for metric in result.metrics
            if (estimate := result.get(row, metric)) is not None]


# -- chart ----------------------------------------------------------------------------------------------------

def caption_chart(result: CaptionMetricsResult, path: Path | None = None) -> bytes:
    """One panel per chart metric: a bar per row with its bootstrap interval."""
    from pipeline.reports.charts import _png, _pyplot, error_bar

    plt = _pyplot()
    metrics = [m for m in CHART_METRICS if m in result.metrics]
    cols = min(4, max(1, len(metrics)))
    nrows = math.ceil(len(metrics) / cols) if metrics else 1
    fig, grid = plt.subplots(nrows, cols, figsize=(3.1 * cols + 0.6, 2.9 * nrows + 0.4), squeeze=False)
    axes = list(grid.flat)
    colours = ["#7f7f7f" if r == HUMAN else ("#4e79a7" if r != result.baseline else "#f28e2b") for r in result.rows]
    for ax, metric in zip(axes, metrics):
        ys, lo, hi = [], [], []
        estimates = [result.get(row, metric) for row in result.rows]
        for e in estimates:
            ys.append(e.value if e is not None and e.known else 0.0)
            below, above = error_bar(e)
            lo.append(below)
            hi.append(above)
        ax.bar(range(len(result.rows)), ys, 0.7, yerr=(lo, hi), capsize=3, color=colours,
               error_kw={"elinewidth": 1, "ecolor": "#333333"})
        for x, e in enumerate(estimates):
            if e is None or not e.known:
                ax.annotate("n/a", (x, 0), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8,
                            color="#7a8590")
        ax.set_title(metric, fontsize=10)
        ax.set_xticks(range(len(result.rows)))
        ax.set_xticklabels(result.rows, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in axes[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"Caption metrics with {round(result.confidence * 100)}% bootstrap intervals "
                 f"({result.n_photos} photos; grey: human, orange: baseline)", fontsize=11)
    fig.tight_layout()
    return _png(fig, path)


# -- HTML -------------------------------------------------------------------------------------------------------

def caption_section(result: CaptionMetricsResult | None, rows: dict[str, RowScores], chart: bytes | None,
                    corr: Correlation | None, stale: bool = False) -> str:
    """The report's caption-metrics section (table, chart, worst captions, correlation with retrieval)."""
    from pipeline.reports.html import estimate_html, png_data_url

    if result is None:
        return ('<h2>Caption metrics</h2><div class=note>No caption metrics yet: run '
                '<code>capsearch evaluate</code> (it runs the caption-metrics stage).</div>')
    head = "".join(f'<th class="name">{escape(r)}{" <small>(baseline)</small>" if r == result.baseline else ""}</th>'
                   for r in result.rows)
    body = []
    for metric in result.metrics:
        body.append(f'<tr><td class="name" title="{escape(fact(metric).description)}">{escape(metric)}</td>'
                    + "".join(f"<td>{estimate_html(metric, result.get(r, metric), result.difference(r, metric), result.baseline)}</td>"
                              for r in result.rows) + "</tr>")
    missing = "".join(f"<td>{result.missing.get(r, 0)}</td>" for r in result.rows)
    body.append(f'<tr><td class="name" title="photos without a usable caption, scored 0">missing</td>{missing}</tr>')
    notes = "".join(f"<div class=note><b>{escape(row)}</b> is not applicable: {escape(why)}; it has no value, "
                    "interval or paired test.</div>" for row, why in result.rows_not_applicable().items())
    notes += "".join(f"<div class=note><b>{escape(', '.join(ms))}</b> not computed: {escape(why)}</div>"
                     for ms, why in result.not_computed())
    notes += "".join(f"<div class=note>{escape(n)}</div>" for n in result.notes)
    if stale:
        notes += "<div class=note>These caption metrics were made under an earlier configuration.</div>"
    chart_html = f'<div class="charts"><img src="{png_data_url(chart)}" alt="caption metrics"></div>' if chart else ""
    return (f"<h2>Caption metrics</h2>"
            f'<p class="meta">{result.n_photos} target photos; {escape(result.references)}. Tokeniser: '
            f"{escape(result.tokenizer)}. Each cell: value, [{round(result.confidence * 100)}% bootstrap interval over "
            f"photos], and Δ against the baseline on the same photos with its paired-bootstrap p. BLEU and METEOR are "
            f"corpus scores as pycocoevalcap reports them; the others are means over photos; a photo without a caption "
            f"scores 0.</p>{notes}"
            f'<table class="metrics"><thead><tr><th class="name">metric</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{chart_html}'
            + _correlation_html(result, corr) + _worst_html(result, rows))


def _correlation_html(result: CaptionMetricsResult, corr: Correlation | None) -> str:
    if corr is None or not corr.rho:
        return ""
    metrics = [m for m in result.metrics if any(m in r for r in corr.rho.values())]
    head = "".join(f"<th>{escape(m)}</th>" for m in metrics)
    body = "".join(
        f'<tr><td class="name">{escape(row)} <small>({corr.n_photos.get(row, 0)} photos)</small></td>'
        + "".join(f"<td>{number(vals.get(m), 2)}</td>" for m in metrics) + "</tr>"
        for row, vals in corr.rho.items())
    return ("<h3>Which caption metric predicts retrieval?</h3>"
            '<p class="meta">Spearman\'s ρ between a photo\'s caption score and the rank its own queries gave it '
            "(mean over query kinds). Negative: photos with higher scores are found sooner; the more negative, the "
            "better the metric tells which captions search will find.</p>"
            f'<table class="metrics"><thead><tr><th class="name">captioner</th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def worst_metric(result: CaptionMetricsResult) -> str | None:
    """The quality measure the worst-captions list ranks by (``WORST_BY``), or None when none was computed."""
    return next((m for m in WORST_BY if m in result.metrics), None)


def _worst_html(result: CaptionMetricsResult, rows: dict[str, RowScores]) -> str:
    metric = worst_metric(result)
    if metric is None:
        return ("<h3>Worst captions</h3><div class=note>No list: no caption quality measure was computed (the "
                "reference-based ones need targets with two human captions, CLIPScore needs the open_clip image "
                "embedder); length and copy rate describe a caption, they do not judge it.</div>")
    parts = []
    skip = result.rows_not_applicable()
    for row in result.rows:
        worst = worst_photos(rows, row, metric, WORST_SHOWN) if row not in skip else []
        if not worst:
            continue
        items = "".join(f"<li><b>{escape(i)}</b> {number(v, fact(metric).digits)}: {escape(c) if c else '<i>no caption</i>'}</li>"
                        for i, v, c in worst)
        what = (" <small>(the targets whose human captions agree least: each photo's mean over its captions, each "
                "scored against the others)</small>" if row == HUMAN else "")
        parts.append(f"<p class=meta><b>{escape(row)}</b>{what}</p><ol>{items}</ol>")
    m = fact(metric)
    why = f"{escape(metric)}, lowest first: {escape(m.description)}" if m.description else f"{escape(metric)}, lowest first"
    return (f"<h3>Worst captions by {escape(metric)}</h3><p class=meta>Ranked by {why}; a photo without a caption "
            f"scores 0 and comes first.</p>" + "".join(parts)) if parts else ""


# -- everything the report writes ---------------------------------------------------------------------------------

@dataclass
class CaptionReport:
    json: dict[str, Any] | None
    records: list[dict[str, Any]]
    html: str
    chart_path: Path | None


def caption_report(ws: "Workspace", evaluation: "EvaluationResult", chart_path: Path) -> CaptionReport:
    """The caption-metrics parts of a report (the current configuration's, else the newest, marked stale)."""
    from pipeline.caption_metrics.storage import latest_caption_metrics, load_rows

    result, stale = latest_caption_metrics(ws)
    if result is None:
        chart_path.unlink(missing_ok=True)
        return CaptionReport(None, [], caption_section(None, {}, None, None), None)
    rows = load_rows(ws, result)
    corr = correlation(ws, result, rows, evaluation)
    chart = caption_chart(result, chart_path) if any(m in result.metrics for m in CHART_METRICS) else None
    return CaptionReport(caption_metrics_json(result, corr), caption_metric_records(result),
                         caption_section(result, rows, chart, corr, stale), chart_path if chart else None)
