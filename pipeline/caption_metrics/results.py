"""Typed results of the caption-metrics stage: per-photo rows and the summary table (the metric catalogue, what
each metric is, is ``pipeline.metric_facts.CAPTION_METRICS``)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.estimates import Difference, Estimate, json_safe
from pipeline.keys import HUMAN  # noqa: F401 (the human row; the TUI reads it from here)
from pipeline.metric_facts import CAPTION_METRICS, Direction, fact

PER_PHOTO = tuple(m.name for m in CAPTION_METRICS if m.per_photo)   # metrics with a score per photo


def order_label(metric: str) -> str:
    """How ``worst_first_key`` orders a metric, in words."""
    f = fact(metric)
    if f.family == "copy":
        return "highest first"
    if f.direction is Direction.NEITHER:
        return "lowest first"
    return "worst first"


def worst_first_key(metric: str, value: float | None, image_id: str) -> tuple[int, float, str]:
    """Sort key putting a metric's worst photos first: lowest quality score, most copied, shortest; photos
    without a value last; equal values (compared at 6 decimals, so float noise never reorders) by photo id."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (1, 0.0, image_id)
    rounded = round(float(value), 6)
    if fact(metric).family == "copy":
        rounded = -rounded
    return (0, rounded, image_id)


@dataclass
class RowScores:
    """One row (a captioner, or ``human``) scored photo by photo."""

    row: str
    ids: list[str]
    captions: list[str]                                   # the caption scored ('' where it has none)
    missing: list[str]                                    # photos without a usable caption (scored 0)
    scores: dict[str, list[float | None]]                 # per-photo values of PER_PHOTO metrics
    bleu_stats: list[list[float]] = field(default_factory=list)
    meteor_stats: list[list[float]] | None = None
    vocabulary: int = 0
    distinct: float | None = None
    shown: str = ""                                       # what the row was shown (copy rate)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass
class CaptionMetricsResult:
    """Per row and metric: value, bootstrap interval, and the paired difference to the baseline."""

    config_hash: str
    rows: list[str]
    metrics: list[str]                                    # metrics computed (catalogue order)
    not_applicable: dict[str, str]                        # metric -> why it was not computed
    baseline: str | None
    n_photos: int
    missing: dict[str, int]
    values: dict[str, dict[str, Estimate]]                # row -> metric -> value with its interval
    vs_baseline: dict[str, dict[str, Difference]]         # row -> metric -> the paired test against the baseline
    notes: list[str] = field(default_factory=list)
    row_hashes: dict[str, str] = field(default_factory=dict)   # row -> key of its per-photo scores
    tokenizer: str = ""
    references: str = ""                                  # how references were chosen
    n_boot: int = 0
    confidence: float = 0.95
    created_at: float = 0.0
    seconds: float = 0.0
    n: dict[str, dict[str, int]] = field(default_factory=dict)   # row -> metric -> photos the value is made from

    def get(self, row: str, metric: str) -> Estimate | None:
        return self.values.get(row, {}).get(metric)

    def difference(self, row: str, metric: str) -> Difference | None:
        """``row - baseline`` for ``metric`` (None: no paired test for this cell)."""
        return self.vs_baseline.get(row, {}).get(metric)

    def rows_not_applicable(self) -> dict[str, str]:
        """Rows none of whose photos has a usable caption, with why: they have no value, interval or test."""
        return {row: f"none of the {self.n_photos} photos has a usable {row} caption (failed, empty or not written)"
                for row in self.rows if self.n_photos and self.missing.get(row, 0) >= self.n_photos}

    def not_computed(self) -> list[tuple[list[str], str]]:
        """Metrics not computed, grouped by reason: ([metric, ...], reason)."""
        groups: dict[str, list[str]] = {}
        for metric, reason in self.not_applicable.items():
            groups.setdefault(reason, []).append(metric)
        return [(metrics, reason) for reason, metrics in groups.items()]

    def as_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

