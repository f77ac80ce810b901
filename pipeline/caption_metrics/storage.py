"""Where caption metrics live in the workspace store (meta keys), and how readers find them.

* ``caption-metrics/row/<row hash>``: one row's per-photo scores (``RowScores``). The row hash covers
  what the row reads (its captions, the photos and references, the tokenizer and which metrics can run),
  so a row is computed once and reused until one of those changes.
* ``caption-metrics/<stage hash>``: the summary (``CaptionMetricsResult``) of the stage's configuration.
* ``caption-metrics/latest``: the stage hash of the newest summary (shown, marked stale, when the current
  configuration has none yet).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.caption_metrics.results import CaptionMetricsResult, RowScores

if TYPE_CHECKING:
    from pipeline.store import Store
    from pipeline.workspace import Workspace

PREFIX = "caption-metrics"


def row_key(row_hash: str) -> str:
    return f"{PREFIX}/row/{row_hash}"


def summary_key(config_hash: str) -> str:
    return f"{PREFIX}/{config_hash}"


def has_row(store: "Store", row_hash: str) -> bool:
    return store.conn.execute("SELECT 1 FROM meta WHERE key=?", (row_key(row_hash),)).fetchone() is not None


def put_row(store: "Store", row_hash: str, row: RowScores) -> None:
    store.set_meta(row_key(row_hash), row.as_dict())


def get_row(store: "Store", row_hash: str) -> RowScores | None:
    data = store.get_meta(row_key(row_hash))
    return RowScores.from_dict(data) if data else None


def put_summary(store: "Store", result: CaptionMetricsResult) -> None:
    with store.transaction():
        store.set_meta(summary_key(result.config_hash), result.as_dict())
        store.set_meta(f"{PREFIX}/latest", result.config_hash)


def get_summary(store: "Store", config_hash: str) -> CaptionMetricsResult | None:
    data = store.get_meta(summary_key(config_hash))
    return CaptionMetricsResult.from_dict(data) if data else None


def current_hash(ws: "Workspace") -> str | None:
    from pipeline.errors import CapsearchError
    from pipeline.search_service import stage_hash

    try:
        return stage_hash(ws, "caption-metrics")
    except CapsearchError:
        return None


def load_caption_metrics(ws: "Workspace", config_hash: str | None = None) -> CaptionMetricsResult | None:
    """The summary of the given stage hash, else of the current configuration (None when not computed)."""
    config_hash = config_hash or current_hash(ws)
    return get_summary(ws.store, config_hash) if config_hash else None


def latest_caption_metrics(ws: "Workspace") -> tuple[CaptionMetricsResult | None, bool]:
    """(summary, stale): the current configuration's, else the newest one marked stale."""
    current = load_caption_metrics(ws)
    if current is not None:
        return current, False
    latest = ws.store.get_meta(f"{PREFIX}/latest")
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
