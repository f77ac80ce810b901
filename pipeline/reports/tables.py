"""The metrics as machine-readable tables: ``metrics.json`` (everything) and ``metrics.csv`` (one row per
method, query kind and metric)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write, write_text
from pipeline.estimates import Difference, Estimate, json_safe
from pipeline.evaluation import EvaluationResult

CSV_COLUMNS = ("method", "query_kind", "metric", "value", "ci_low", "ci_high", "n_queries", "missing_targets",
               "n_targets", "baseline", "diff", "diff_ci_low", "diff_ci_high", "p_value")


def metric_record(method: str, query_kind: str, metric: str, estimate: Estimate, difference: Difference | None,
                  baseline: str | None, n_queries: int, missing_targets: int, n_targets: int) -> dict[str, Any]:
    """One row of ``metrics.csv`` (``CSV_COLUMNS``): an estimate and its paired test, flat, NaN as None."""
    d = difference
    return json_safe({
        "method": method, "query_kind": query_kind, "metric": metric, "value": estimate.value,
        "ci_low": estimate.low, "ci_high": estimate.high, "n_queries": n_queries, "missing_targets": missing_targets,
        "n_targets": n_targets, "baseline": baseline if d else None, "diff": d.diff if d else None,
        "diff_ci_low": d.low if d else None, "diff_ci_high": d.high if d else None, "p_value": d.p if d else None,
    })


def metric_records(result: EvaluationResult) -> list[dict[str, Any]]:
    """One flat record per (method, query kind, metric), in the evaluation's order."""
    return [metric_record(r.method, r.kind, metric, r.metrics.get(metric, Estimate(None)), r.difference(metric),
                          result.baseline, r.n_queries, r.missing_targets, result.n_targets)
            for r in result.results for metric in result.metrics]


def evaluation_json(result: EvaluationResult) -> dict[str, Any]:
    """Everything about one evaluation as plain JSON (NaN written as null)."""
    return json_safe(result.as_dict())


def write_metrics_json(result: EvaluationResult, path: Path, caption_metrics: dict[str, Any] | None = None,
                       caption_usage: list[dict[str, Any]] | None = None) -> Path:
    data = evaluation_json(result)
    if caption_metrics is not None:
        data["caption_metrics"] = caption_metrics
    if caption_usage:   # captioners that asked a model server: tokens, cost, speed (pipeline.reports.usage)
        data["caption_usage"] = caption_usage
    return write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_metrics_csv(result: EvaluationResult, path: Path, extra_records: list[dict[str, Any]] | None = None) -> Path:
    """Retrieval rows, then ``extra_records`` (the caption metrics, query_kind 'caption')."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for rec in metric_records(result) + list(extra_records or []):
            writer.writerow({k: ("" if rec[k] is None else rec[k]) for k in CSV_COLUMNS})
    return path
