"""What the CLI prints about results: the evaluation table and where the report is."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from capsearch.cli.context import console

if TYPE_CHECKING:
    from pipeline.evaluation import EvaluationResult
    from pipeline.workspace import Workspace


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cell(m: dict | None, d: dict | None, metric: str) -> str:
    """Value, its interval, and (for non-baseline methods) the difference to the baseline with its p-value."""
    if not m:
        return "–"
    digits = 1 if metric == "MedR" else 3
    ci_digits = 1 if metric == "MedR" else 2
    text = f"{_fmt(m.get('value'), digits)}\n[dim]{_fmt(m.get('low'), ci_digits)}–{_fmt(m.get('high'), ci_digits)}[/]"
    if d and d.get("diff") is not None:
        good = d["diff"] < 0 if metric == "MedR" else d["diff"] > 0
        significant = d.get("p") is not None and d["p"] < 0.05 and d["diff"] != 0
        colour = ("green" if good else "red") if significant else "dim"
        text += f"\n[{colour}]Δ{d['diff']:+.{ci_digits}f}[/]\n[dim]p={_fmt(d.get('p'), 3)}[/]"
    return text


def evaluation_tables(result: "EvaluationResult") -> list[Table]:
    """One table per query kind: per method, each metric's value, CI, and Δ vs the baseline with p; under a
    method's name, how many targets it could not rank (failed or empty captions)."""
    from rich import box

    ci = round(result.confidence * 100)
    against = f", Δ vs {result.baseline} with paired-bootstrap p" if result.baseline else ""
    tables = []
    for kind in result.kinds:
        table = Table(title=f"{kind} queries (n = {result.n_queries.get(kind, 0)}, {result.n_targets} photos): "
                            f"value, {ci}% CI{against}", title_justify="left", header_style="bold",
                      box=box.SIMPLE_HEAD, show_lines=False, pad_edge=False)
        table.add_column("method", no_wrap=True)
        for metric in result.metrics:
            table.add_column(metric, justify="right", no_wrap=True)
        for method in result.methods:
            r = result.get(method, kind)
            if r is None:
                continue
            missing = result.missing.get(method, 0)
            name = method + ("\n[dim](baseline)[/]" if method == result.baseline else "")
            name += f"\n[red]{missing} missing[/]" if missing else ""
            table.add_row(name, *[_cell(r.metrics.get(m), (r.vs_baseline or {}).get(m), m) for m in result.metrics],
                          end_section=True)
        for method in result.not_applicable:       # nothing to rank: no value, no interval, no test (reason below)
            table.add_row(f"{method}\n[yellow]not applicable[/]", *["[dim]n/a[/]" for _ in result.metrics],
                          end_section=True)
        tables.append(table)
    return tables


def print_evaluation(result: "EvaluationResult", stale: bool = False) -> None:
    console.print(f"[bold]Evaluation {result.eval_hash}[/]: which method finds the true photo "
                  "(R@K, MRR: higher is better; MedR: median rank, lower is better)", highlight=False)
    for table in evaluation_tables(result):
        console.print(table)
    if stale:
        console.print("[yellow]this evaluation was made under an earlier configuration; "
                      "run `capsearch evaluate` for the current one[/]")
    for method, reason in result.not_applicable.items():
        console.print(f"[yellow]{method} not applicable: {reason}[/]", highlight=False)
    for method, reason in result.skipped.items():
        console.print(f"[yellow]{method} not evaluated: {reason}[/]", highlight=False)
    for method in result.methods:
        if result.missing.get(method):
            console.print(f"[yellow]{method}: {result.missing[method]} of {result.n_targets} targets have no usable "
                          "caption and rank last in its queries[/]", highlight=False)
    if result.failed_queries:
        console.print(f"[yellow]{result.failed_queries} queries failed to generate and are not evaluated "
                      "(`capsearch queries --retry-failed`)[/]")


def report_files(ws: "Workspace") -> list[Path]:
    """The files of the newest report (HTML first), those that exist."""
    meta = ws.store.get_meta("report/latest") or {}
    files = [Path(p) for p in meta.get("files", [])]
    html = [p for p in files if p.suffix == ".html"]
    return [p for p in html + [p for p in files if p.suffix != ".html"] if p.exists()]


def print_report_paths(ws: "Workspace") -> None:
    files = report_files(ws)
    if not files:
        console.print("no report yet: run `capsearch report`")
        return
    console.print(f"[bold]report[/]: {files[0]}", highlight=False, soft_wrap=True)
    for path in files[1:]:
        console.print(f"        {path}", highlight=False, soft_wrap=True)


def print_summary(ws: "Workspace") -> None:
    """What `capsearch demo` prints at the end: the evaluation table and the report's paths."""
    from pipeline.evaluation import latest_evaluation

    from pipeline.caption_metrics.storage import latest_caption_metrics

    result, stale = latest_evaluation(ws)
    console.print()
    if result is None:
        console.print("no evaluation yet: run `capsearch evaluate`")
    else:
        print_evaluation(result, stale)
    print_caption_metrics(*latest_caption_metrics(ws))
    print_report_paths(ws)


# -- caption metrics --------------------------------------------------------------------------------------------

def _caption_cell(result, row: str, metric: str) -> str:
    from pipeline.caption_metrics.results import info

    m = result.get(row, metric)
    if not m or m.get("value") is None:
        return "[dim]–[/]"
    digits = info(metric).digits
    text = _fmt(m["value"], digits)
    if m.get("low") is not None:
        ci = max(1, digits - 1)
        text += f"\n[dim]{_fmt(m.get('low'), ci)}–{_fmt(m.get('high'), ci)}[/]"
    d = result.vs_baseline.get(row, {}).get(metric)
    if d and d.get("diff") is not None:
        better = info(metric).higher_is_better
        significant = d.get("p") is not None and d["p"] < 0.05 and d["diff"] != 0
        colour = ("green" if d["diff"] > 0 else "red") if significant and better else "dim"
        text += f"\n[{colour}]Δ{d['diff']:+.{max(1, digits - 1)}f}[/] [dim]p={_fmt(d.get('p'), 3)}[/]"
    return text


def caption_metrics_table(result) -> Table:
    """Metrics down, rows (human, captioners) across: value, CI and Δ vs the baseline with p."""
    from rich import box

    ci = round(result.confidence * 100)
    against = f", Δ vs {result.baseline} with paired-bootstrap p" if result.baseline else ""
    table = Table(title=f"caption metrics ({result.n_photos} photos; tokeniser {result.tokenizer}): value, {ci}% CI"
                        f"{against}", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("metric", no_wrap=True)
    for row in result.rows:
        table.add_column(row + ("\n(baseline)" if row == result.baseline else ""), justify="right", no_wrap=True)
    for metric in result.metrics:
        table.add_row(metric, *[_caption_cell(result, row, metric) for row in result.rows], end_section=True)
    table.add_row("missing", *[(f"[red]{n}[/]" if (n := result.missing.get(row, 0)) else "0") for row in result.rows])
    if result.rows_not_applicable():
        table.add_row("", *["[yellow]not applicable[/]" if row in result.rows_not_applicable() else ""
                            for row in result.rows])
    return table


def print_caption_metrics(result, stale: bool = False) -> None:
    if result is None:
        console.print("no caption metrics yet: run `capsearch evaluate`")
        return
    console.print(f"[bold]Caption metrics[/]: {result.references}", highlight=False)
    console.print(caption_metrics_table(result))
    if stale:
        console.print("[yellow]these caption metrics were made under an earlier configuration; "
                      "run `capsearch evaluate` for the current one[/]")
    for row, reason in result.rows_not_applicable().items():
        console.print(f"[yellow]{row} not applicable: {reason}[/]", highlight=False)
    for metrics, reason in result.not_computed():
        console.print(f"[dim]{', '.join(metrics)} not computed: {reason}[/]", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]{note}[/]", highlight=False)
