"""What the CLI prints about results: the evaluation table and where the report is."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from capsearch.cli.context import console
from pipeline.metric_facts import DASH, Verdict, metric_cell

if TYPE_CHECKING:
    from pipeline.estimates import Difference, Estimate
    from pipeline.evaluation import EvaluationResult
    from pipeline.workspace import Workspace


def _cell(metric: str, estimate: "Estimate | None", difference: "Difference | None" = None) -> str:
    """Value, its interval, and (for a method other than the baseline) the difference to the baseline with its
    p-value, one under the other (``pipeline.metric_facts.metric_cell``)."""
    cell = metric_cell(metric, estimate, difference)
    if cell is None:
        return f"[dim]{DASH}[/]"
    text = cell.value
    if cell.low is not None:
        text += f"\n[dim]{cell.low}–{cell.high}[/]"
    if cell.delta is not None:
        colour = {Verdict.BETTER: "green", Verdict.WORSE: "red"}.get(cell.verdict, "dim")
        text += f"\n[{colour}]Δ{cell.delta}[/]\n[dim]p={cell.p}[/]"
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
            table.add_row(name, *[_cell(m, r.metrics.get(m), r.difference(m)) for m in result.metrics],
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
        table.add_row(metric, *[_cell(metric, result.get(row, metric), result.difference(row, metric))
                                for row in result.rows], end_section=True)
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
