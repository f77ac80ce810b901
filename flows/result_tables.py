"""A run's results as the rows of Prefect table artifacts: the evaluation, the caption metrics, a stage's failures.

Plain functions from the typed results (``EvaluationResult``, ``CaptionMetricsResult``, a stage's failed items)
to rows of text cells, every row with the same columns; ``flows.artifacts`` writes them. Each cell reads as the
CLI's and the HTML report's do (``pipeline.metric_facts.metric_cell``, on one line): the value, its bootstrap
interval in brackets, and, for a method other than the baseline, the paired difference with its p-value
(``0.367 [0.30, 0.43] Δ +0.05 p=0.080``). Numbers are rounded here only for reading; the stored results are what
the tests and the report compare.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.metric_facts import DASH, metric_cell

if TYPE_CHECKING:
    from pipeline.caption_metrics.results import CaptionMetricsResult
    from pipeline.estimates import Difference, Estimate
    from pipeline.evaluation import EvaluationResult

FAILURES_SHOWN = 20          # failed items listed per stage; the rest are counted


def estimate_cell(metric: str, estimate: "Estimate | None", difference: "Difference | None") -> str:
    """``value [low, high]``, then ``Δ +diff p=p`` where there is a paired test against the baseline."""
    cell = metric_cell(metric, estimate, difference)
    return cell.line() if cell is not None else DASH


def evaluation_rows(result: "EvaluationResult") -> list[dict[str, str]]:
    """One row per method and query kind: the method (marked as the baseline, or with the targets it could
    not rank), the query kind and count, then R@1, R@5, R@10, MRR and MedR as ``estimate_cell``."""
    rows = []
    for kind in result.kinds:
        for method in result.methods:
            r = result.get(method, kind)
            if r is None:
                continue
            name = method + (" (baseline)" if method == result.baseline else "")
            row = {"method": name, "queries": f"{kind} (n={r.n_queries})",
                   "missing targets": str(r.missing_targets)}
            for metric in result.metrics:
                row[metric] = estimate_cell(metric, r.metrics.get(metric), r.difference(metric))
            rows.append(row)
        for method in result.not_applicable:       # nothing to rank: no value, interval or test (why: description)
            rows.append({"method": f"{method} (not applicable)", "queries": kind,
                         "missing targets": str(result.missing.get(method, result.n_targets)),
                         **{metric: "n/a" for metric in result.metrics}})
    return rows


def evaluation_description(result: "EvaluationResult", computed: bool) -> str:
    ci = round(result.confidence * 100)
    against = (f"; Δ: the difference to {result.baseline} with its paired-bootstrap p-value" if result.baseline
               else "; no baseline among the methods, so no paired test")
    skipped = "".join(f"; {m} not evaluated: {why}" for m, why in result.skipped.items())
    skipped += "".join(f"; {m} not applicable: {why}" for m, why in result.not_applicable.items())
    return (f"Retrieval of the {result.n_targets} target photos by every method and query kind: Recall@1/5/10 "
            f"and MRR (higher is better), MedR (median rank, lower is better), each with its {ci}% bootstrap "
            f"interval ({result.n_boot} resamples){against}{skipped}. Evaluation {result.eval_hash[:12]}, "
            f"{'computed in this run' if computed else 'unchanged, reused by this run'}.")


def caption_metric_rows(result: "CaptionMetricsResult") -> list[dict[str, str]]:
    """Metrics down, the rows (``human`` and each captioner) across, as the CLI prints them; a last row counts
    each row's photos without a caption."""
    def column(row: str) -> str:
        return row + (" (baseline)" if row == result.baseline else "")

    out = []
    for metric in result.metrics:
        line = {"metric": metric}
        for row in result.rows:
            line[column(row)] = estimate_cell(metric, result.get(row, metric), result.difference(row, metric))
        out.append(line)
    out.append({"metric": "photos without a caption", **{column(r): str(result.missing.get(r, 0)) for r in result.rows}})
    not_applicable = result.rows_not_applicable()
    if not_applicable:
        out.append({"metric": "not applicable", **{column(r): "yes" if r in not_applicable else "" for r in result.rows}})
    return out


def caption_metrics_description(result: "CaptionMetricsResult", computed: bool) -> str:
    ci = round(result.confidence * 100)
    against = f"; Δ: the difference to {result.baseline} with its paired-bootstrap p-value" if result.baseline else ""
    not_computed = "".join(f"; {', '.join(ms)} not computed: {why}" for ms, why in result.not_computed())
    not_computed += "".join(f"; {row} not applicable: {why}" for row, why in result.rows_not_applicable().items())
    return (f"Caption metrics of {result.n_photos} target photos: {result.references} (tokeniser {result.tokenizer}); "
            f"each with its {ci}% bootstrap interval{against}{not_computed}. "
            f"{'Computed in this run' if computed else 'Unchanged, reused by this run'}.")


def failure_rows(failures: dict[str, str], shown: int = FAILURES_SHOWN) -> list[dict[str, str]]:
    """The first ``shown`` failed items by name (item, reason), and a last row counting the rest."""
    items = sorted(failures)
    rows = [{"item": item, "reason": failures[item]} for item in items[:shown]]
    rest = len(items) - len(rows)
    if rest > 0:
        rows.append({"item": f"… and {rest} more", "reason": "`capsearch status` lists every failed item"})
    return rows
