"""The caption-metric tables (schema 3): each row (a captioner, or ``human``) scored photo by photo under its
row hash, and the summary of each ``caption-metrics`` configuration (rows, metrics, values with intervals and
the paired test). ``Store.caption_metrics``; ``pipeline.caption_metrics.storage`` converts to and from the
scoring's results."""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Iterable, Sequence

from pipeline.store.database import Database
from pipeline.estimates import Estimate
from pipeline.store.sql import difference_columns, estimate_columns, from_json_list, json_list, stored_difference
from pipeline.store_rows import (CaptionMetricPhoto, CaptionMetricScore, CaptionMetricValue, CaptionSummaryRow,
                                 StoredCaptionRow, StoredCaptionSummary)


class CaptionMetricTables:
    """The caption-metric rows and summaries of one workspace store."""

    def __init__(self, store: Database):
        self.store = store

    def put_row(self, row: StoredCaptionRow) -> None:
        """Store (or replace) one caption-metrics row: its photos and per-photo scores, in one transaction."""
        h = row.row_hash
        with self.store.transaction() as c:
            self._delete_rows(c, [h])
            c.execute("INSERT INTO caption_metric_rows(row_hash, row, vocabulary, distinct_share, shown, seconds, "
                      "created_at) VALUES (?,?,?,?,?,?,?)",
                      (h, row.row, row.vocabulary, row.distinct, row.shown, row.seconds, time.time()))
            c.executemany(
                "INSERT INTO caption_metric_photos(row_hash, idx, image_id, caption, bleu_stats, meteor_stats) "
                "VALUES (?,?,?,?,?,?)",
                [(h, n, p.image_id, p.caption, json_list(p.bleu_stats), json_list(p.meteor_stats))
                 for n, p in enumerate(row.photos)])
            c.executemany("INSERT INTO caption_metric_scores(row_hash, metric, image_id, value) VALUES (?,?,?,?)",
                          [(h, s.metric, s.image_id, s.value) for s in row.scores])

    @staticmethod
    def _delete_rows(c: sqlite3.Connection, hashes: Sequence[str]) -> None:
        for table in ("caption_metric_rows", "caption_metric_photos", "caption_metric_scores"):
            c.executemany(f"DELETE FROM {table} WHERE row_hash=?", [(h,) for h in hashes])

    def stored_rows(self, hashes: Iterable[str]) -> set[str]:
        """Which of these row hashes have their row stored."""
        wanted = sorted(set(hashes))
        if not wanted:
            return set()
        marks = ",".join("?" * len(wanted))
        return {r[0] for r in self.store.conn.execute(
            f"SELECT row_hash FROM caption_metric_rows WHERE row_hash IN ({marks})", wanted)}

    def row(self, row_hash: str) -> StoredCaptionRow | None:
        with self.store.read() as c:
            head = c.execute("SELECT row, vocabulary, distinct_share, shown, seconds FROM caption_metric_rows "
                             "WHERE row_hash=?", (row_hash,)).fetchone()
            if head is None:
                return None
            photos = tuple(
                CaptionMetricPhoto(r[0], r[1], from_json_list(r[2]), from_json_list(r[3]))
                for r in c.execute("SELECT image_id, caption, bleu_stats, meteor_stats FROM caption_metric_photos "
                                   "WHERE row_hash=? ORDER BY idx", (row_hash,)))
            scores = tuple(CaptionMetricScore(*r) for r in c.execute(
                "SELECT s.image_id, s.metric, s.value FROM caption_metric_scores s LEFT JOIN caption_metric_photos p "
                "ON p.row_hash=s.row_hash AND p.image_id=s.image_id WHERE s.row_hash=? ORDER BY s.metric, p.idx, s.image_id",
                (row_hash,)))
        return StoredCaptionRow(row_hash, head[0], head[1], head[2], head[3], head[4], photos, scores)

    def put_summary(self, summary: StoredCaptionSummary) -> None:
        """Store (or replace) the summary of one caption-metrics configuration, in one transaction."""
        h = summary.config_hash
        with self.store.transaction() as c:
            for table in ("caption_metric_summaries", "caption_metric_summary_rows", "caption_metric_summary_metrics",
                          "caption_metric_values"):
                c.execute(f"DELETE FROM {table} WHERE config_hash=?", (h,))
            c.execute("INSERT INTO caption_metric_summaries(config_hash, baseline, n_photos, tokenizer, reference_rule, "
                      "n_boot, confidence, notes, seconds, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                      (h, summary.baseline, summary.n_photos, summary.tokenizer, summary.reference_rule,
                       summary.n_boot, summary.confidence, json.dumps(list(summary.notes)), summary.seconds,
                       summary.created_at))
            c.executemany("INSERT INTO caption_metric_summary_rows(config_hash, position, row, row_hash, missing) "
                          "VALUES (?,?,?,?,?)",
                          [(h, n, r.row, r.row_hash, r.missing) for n, r in enumerate(summary.rows)])
            c.executemany("INSERT INTO caption_metric_summary_metrics(config_hash, position, metric, reason) "
                          "VALUES (?,?,?,?)",
                          [(h, n, m, None) for n, m in enumerate(summary.metrics)]
                          + [(h, n, m, why) for n, (m, why) in enumerate(summary.not_computed)])
            c.executemany(
                "INSERT INTO caption_metric_values(config_hash, row, metric, value, ci_low, ci_high, n, baseline, diff, "
                "diff_ci_low, diff_ci_high, p_value) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(h, v.row, v.metric, *estimate_columns(v.estimate), v.n, v.baseline if v.vs_baseline else None,
                  *difference_columns(v.vs_baseline)) for v in summary.values])

    def summary(self, config_hash: str) -> StoredCaptionSummary | None:
        with self.store.read() as c:
            head = c.execute("SELECT baseline, n_photos, tokenizer, reference_rule, n_boot, confidence, notes, seconds, "
                             "created_at FROM caption_metric_summaries WHERE config_hash=?", (config_hash,)).fetchone()
            if head is None:
                return None
            rows = tuple(CaptionSummaryRow(*r) for r in c.execute(
                "SELECT row, row_hash, missing FROM caption_metric_summary_rows WHERE config_hash=? ORDER BY position",
                (config_hash,)))
            metrics = c.execute("SELECT metric, reason FROM caption_metric_summary_metrics WHERE config_hash=? "
                                "ORDER BY position, metric", (config_hash,)).fetchall()
            position = {r.row: n for n, r in enumerate(rows)}
            values = sorted(
                (CaptionMetricValue(r[0], r[1], Estimate(*r[2:5]), r[5], r[6], stored_difference(r[6], r[7:11]))
                 for r in c.execute(
                    "SELECT row, metric, value, ci_low, ci_high, n, baseline, diff, diff_ci_low, diff_ci_high, p_value "
                    "FROM caption_metric_values WHERE config_hash=?", (config_hash,))),
                key=lambda v: (position.get(v.row, len(position)), v.row, v.metric))
        return StoredCaptionSummary(
            config_hash, head[0], head[1], head[2], head[3], head[4], head[5], tuple(json.loads(head[6])), head[7],
            head[8], rows, tuple(m for m, why in metrics if why is None),
            tuple((m, why) for m, why in metrics if why is not None), tuple(values))

    def has_summary(self, config_hash: str) -> bool:
        return self.store.conn.execute("SELECT 1 FROM caption_metric_summaries WHERE config_hash=?",
                                 (config_hash,)).fetchone() is not None

    def latest_hash(self) -> str | None:
        """The configuration hash of the newest caption-metrics summary (None: none stored)."""
        r = self.store.conn.execute("SELECT config_hash FROM caption_metric_summaries "
                              "ORDER BY created_at DESC, config_hash LIMIT 1").fetchone()
        return r[0] if r else None

    def delete_all(self) -> None:
        """Forget every caption-metrics row and summary (the stage computes them again)."""
        with self.store.transaction() as c:
            for table in ("caption_metric_rows", "caption_metric_photos", "caption_metric_scores",
                          "caption_metric_summaries", "caption_metric_summary_rows", "caption_metric_summary_metrics",
                          "caption_metric_values"):
                c.execute(f"DELETE FROM {table}")
