"""The metrics as machine-readable tables: ``metrics.json`` (everything) and ``metrics.csv`` (one row per
method, query kind and metric)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write, write_text
from pipeline.evaluation import EvaluationResult, json_safe

CSV_COLUMNS = ("method", "query_kind", "metric", "value", "ci_low", "ci_high", "n_queries", "missing_targets",
               "n_targets", "baseline", "diff", "diff_ci_low", "diff_ci_high", "p_value")


def metric_records(result: EvaluationResult) -> list[dict[str, Any]]:
    """One flat record per (method, query kind, metric), in the evaluation's order."""
    out = []
    for r in result.results:
        for metric in result.metrics:
            m = r.metrics.get(metric, {})
            d = (r.vs_baseline or {}).get(metric)
            out.append(json_safe({
                "method": r.method, "query_kind": r.kind, "metric": metric, "value": m.get("value"),
                "ci_low": m.get("low"), "ci_high": m.get("high"), "n_queries": r.n_queries,
                "missing_targets": r.missing_targets, "n_targets": result.n_targets,
                "baseline": result.baseline if d else None, "diff": d["diff"] if d else None,
                "diff_ci_low": d["low"] if d else None, "diff_ci_high": d["high"] if d else None,
                "p_value": d["p"] if d else None,
            }))
    return out


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
        for rec in metric_records(result) + [json_safe(r) for r in extra_records or []]:
            writer.writerow({k: ("" if rec[k] is None else rec[k]) for k in CSV_COLUMNS})
    return path
