"""Caption metrics in the workspace store, and how readers find them.

The store owns the tables and their SQL (``pipeline.store``, schema 3, "caption metrics"); this module turns
its typed rows into the stage's results and back:

* a **row** (``RowScores``): one captioner, or ``human``, scored photo by photo, stored under its row hash
  (``caption_metric_rows``, ``caption_metric_photos``, ``caption_metric_scores``). The row hash covers what
  the row reads (its captions, the photos and references, the tokenizer and which metrics can run), so a
  row is computed once and reused until one of those changes;
* a **summary** (``CaptionMetricsResult``) of one stage configuration: its rows, metrics (and why others were
  not computed), values with intervals and the paired test (``caption_metric_summaries`` and the
  ``caption_metric_summary_*`` / ``caption_metric_values`` tables).

The stage writes the rows it computed and the summary in one transaction. Readers see the current
configuration's summary, else the newest one, marked stale.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from pipeline.caption_metrics.identity import current_caption_metrics_hash
from pipeline.caption_metrics.results import PER_PHOTO, CaptionMetricsResult, RowScores
from pipeline.estimates import Difference, Estimate, finite
from pipeline.store_rows import (CaptionMetricPhoto, CaptionMetricScore, CaptionMetricValue, CaptionSummaryRow,
                                 StoredCaptionRow, StoredCaptionSummary)

if TYPE_CHECKING:
    from pipeline.store import Store
    from pipeline.workspace import Workspace


# -- rows -----------------------------------------------------------------------------------------------------

def stored_rows(store: "Store", row_hashes: Iterable[str]) -> set[str]:
    """Which of these rows are stored."""
    return store.caption_metrics.stored_rows(row_hashes)


def to_stored_row(row_hash: str, row: RowScores) -> StoredCaptionRow:
    photos = tuple(
        CaptionMetricPhoto(image_id, caption,
                           tuple(row.bleu_stats[n]) if row.bleu_stats else None,
                           tuple(row.meteor_stats[n]) if row.meteor_stats else None)
        for n, (image_id, caption) in enumerate(zip(row.ids, row.captions)))
    scores = tuple(CaptionMetricScore(image_id, metric, finite(value))
                   for metric, values in row.scores.items() for image_id, value in zip(row.ids, values))
    return StoredCaptionRow(row_hash, row.row, row.vocabulary, finite(row.distinct), row.shown, row.seconds,
                            photos, scores)


def from_stored_row(stored: StoredCaptionRow) -> RowScores:
    ids = [p.image_id for p in stored.photos]
    captions = [p.caption for p in stored.photos]
    place = {image_id: n for n, image_id in enumerate(ids)}
    by_metric: dict[str, list[float | None]] = {}
    for s in stored.scores:
        values = by_metric.setdefault(s.metric, [None] * len(ids))
        if s.image_id in place:
            values[place[s.image_id]] = s.value
    known = [m for m in PER_PHOTO if m in by_metric]
    scores = {m: by_metric[m] for m in [*known, *sorted(set(by_metric) - set(known))]}
    photos = stored.photos
    bleu = [list(p.bleu_stats) for p in photos] if photos and all(p.bleu_stats is not None for p in photos) else []
    meteor = ([list(p.meteor_stats) for p in photos]
              if photos and all(p.meteor_stats is not None for p in photos) else None)
    return RowScores(stored.row, ids, captions, [i for i, c in zip(ids, captions) if not c], scores, bleu, meteor,
                     stored.vocabulary, stored.distinct, stored.shown, stored.seconds or 0.0)


def put_row(store: "Store", row_hash: str, row: RowScores) -> None:
    store.caption_metrics.put_row(to_stored_row(row_hash, row))


def get_row(store: "Store", row_hash: str) -> RowScores | None:
    stored = store.caption_metrics.row(row_hash)
    return from_stored_row(stored) if stored is not None else None


# -- summaries --------------------------------------------------------------------------------------------------

def to_stored_summary(result: CaptionMetricsResult) -> StoredCaptionSummary:
    values = []
    for row in result.rows:
        for metric, estimate in result.values.get(row, {}).items():
            d = result.difference(row, metric)
            values.append(CaptionMetricValue(row, metric, estimate, result.n.get(row, {}).get(metric, 0),
                                             result.baseline if d else None, d))
    return StoredCaptionSummary(
        result.config_hash, result.baseline, result.n_photos, result.tokenizer, result.references, result.n_boot,
        result.confidence, tuple(result.notes), result.seconds, result.created_at,
        tuple(CaptionSummaryRow(r, result.row_hashes.get(r, ""), result.missing.get(r, 0)) for r in result.rows),
        tuple(result.metrics), tuple(result.not_applicable.items()), tuple(values))


def from_stored_summary(stored: StoredCaptionSummary) -> CaptionMetricsResult:
    rows = [r.row for r in stored.rows]
    cells = {(v.row, v.metric): v for v in stored.values}
    metric_order = [*stored.metrics, *sorted({v.metric for v in stored.values} - set(stored.metrics))]
    values: dict[str, dict[str, Estimate]] = {r: {} for r in rows}
    diffs: dict[str, dict[str, Difference]] = {r: {} for r in rows}
    counts: dict[str, dict[str, int]] = {r: {} for r in rows}
    for row in rows:
        for metric in metric_order:
            v = cells.get((row, metric))
            if v is None:
                continue
            values[row][metric] = v.estimate
            counts[row][metric] = v.n
            if v.vs_baseline is not None:
                diffs[row][metric] = v.vs_baseline
    return CaptionMetricsResult(
        config_hash=stored.config_hash, rows=rows, metrics=list(stored.metrics),
        not_applicable=dict(stored.not_computed), baseline=stored.baseline, n_photos=stored.n_photos,
        missing={r.row: r.missing for r in stored.rows}, values=values, vs_baseline=diffs, notes=list(stored.notes),
        row_hashes={r.row: r.row_hash for r in stored.rows}, tokenizer=stored.tokenizer,
        references=stored.reference_rule, n_boot=stored.n_boot, confidence=stored.confidence,
        created_at=stored.created_at, seconds=stored.seconds or 0.0, n=counts)


def put_summary(store: "Store", result: CaptionMetricsResult) -> None:
    store.caption_metrics.put_summary(to_stored_summary(result))


def has_summary(store: "Store", config_hash: str) -> bool:
    return store.caption_metrics.has_summary(config_hash)


def get_summary(store: "Store", config_hash: str) -> CaptionMetricsResult | None:
    stored = store.caption_metrics.summary(config_hash)
    return from_stored_summary(stored) if stored is not None else None


# -- readers -----------------------------------------------------------------------------------------------------

def load_caption_metrics(ws: "Workspace", config_hash: str | None = None) -> CaptionMetricsResult | None:
    """The summary of the given stage hash, else of the current configuration (None when not computed)."""
    config_hash = config_hash or current_caption_metrics_hash(ws)
    return get_summary(ws.store, config_hash) if config_hash else None


def latest_caption_metrics(ws: "Workspace") -> tuple[CaptionMetricsResult | None, bool]:
    """(summary, stale): the current configuration's, else the newest one stored, marked stale (as
    ``evaluation.latest_evaluation`` does for the retrieval metrics)."""
    current = load_caption_metrics(ws)
    if current is not None:
        return current, False
    latest = ws.store.caption_metrics.latest_hash()
    found = get_summary(ws.store, latest) if latest else None
    return found, found is not None


def load_rows(ws: "Workspace", result: CaptionMetricsResult) -> dict[str, RowScores]:
    """Every row's per-photo scores of a summary, in its row order (rows no longer stored are left out)."""
    out = {}
    for row in result.rows:
        got = get_row(ws.store, result.row_hashes.get(row, ""))
        if got is not None:
            out[row] = got
    return out
