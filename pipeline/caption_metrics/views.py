"""Read-only views of the caption metrics for browsing (the TUI): the summary table, each photo's scores,
and the photos ordered worst first by any per-photo metric of any row."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.caption_metrics.results import CaptionMetricsResult, RowScores, worst_first_key
from pipeline.metric_facts import fact

if TYPE_CHECKING:
    from pipeline.workspace import Workspace


@dataclass
class CaptionMetricsView:
    result: CaptionMetricsResult | None
    stale: bool = False
    rows: dict[str, RowScores] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.result is None

    def sortable(self) -> list[str]:
        """Per-photo metrics that have scores, in catalogue order."""
        if self.result is None:
            return []
        return [m for m in self.result.metrics if fact(m).per_photo
                and any(m in r.scores for r in self.rows.values())]

    def score_rows(self) -> list[str]:
        """Rows that have per-photo scores (human first, then the captioners)."""
        return [r for r in (self.result.rows if self.result else []) if r in self.rows]

    def photo_scores(self, image_id: str) -> dict[str, dict[str, float | None]]:
        """row -> metric -> this photo's score (rows that scored the photo)."""
        out: dict[str, dict[str, float | None]] = {}
        for name, row in self.rows.items():
            try:
                n = row.ids.index(image_id)
            except ValueError:
                continue
            out[name] = {m: values[n] for m, values in row.scores.items()}
        return out

    def score(self, row: str, metric: str, image_id: str) -> float | None:
        return self.photo_scores(image_id).get(row, {}).get(metric)

    def order(self, row: str, metric: str, ids: list[str]) -> list[str]:
        """``ids`` worst first by ``metric`` of ``row`` (ties and unscored photos by id, unscored last)."""
        scored = self.rows.get(row)
        values = dict(zip(scored.ids, scored.scores.get(metric, []))) if scored else {}
        return sorted(ids, key=lambda i: worst_first_key(metric, values.get(i), i))


def caption_metrics_view(ws: "Workspace") -> CaptionMetricsView:
    from pipeline.caption_metrics.storage import latest_caption_metrics, load_rows

    result, stale = latest_caption_metrics(ws)
    if result is None:
        return CaptionMetricsView(None)
    return CaptionMetricsView(result, stale, load_rows(ws, result))
