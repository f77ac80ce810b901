"""Typed results of the caption-metrics stage: the metric catalogue, per-photo rows, and the summary table."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.keys import HUMAN  # noqa: F401 (the human row; the TUI reads it from here)


@dataclass(frozen=True)
class MetricInfo:
    name: str
    family: str                    # 'reference' | 'reference-free' | 'copy' | 'descriptive'
    per_photo: bool                # has a score per photo (sortable, correlated with retrieval)
    higher_is_better: bool | None  # None: neither (length, copy rate, overlap: read, do not maximise)
    digits: int
    description: str


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("BLEU-1", "reference", True, True, 3, "n-gram precision with brevity penalty (Papineni et al., 2002)"),
    MetricInfo("BLEU-2", "reference", True, True, 3, ""),
    MetricInfo("BLEU-3", "reference", True, True, 3, ""),
    MetricInfo("BLEU-4", "reference", True, True, 3, ""),
    MetricInfo("METEOR", "reference", True, True, 3,
               "unigram F-mean with stems, synonyms and paraphrases (Denkowski & Lavie, 2014)"),
    MetricInfo("ROUGE-L", "reference", True, True, 3, "longest common subsequence F-measure (Lin, 2004)"),
    MetricInfo("CIDEr-D", "reference", True, True, 3, "TF-IDF n-gram consensus (Vedantam et al., 2015)"),
    MetricInfo("SPICE", "reference", True, True, 3, "scene-graph F-score (Anderson et al., 2016)"),
    MetricInfo("CLIPScore", "reference-free", True, True, 3, "image-caption CLIP similarity (Hessel et al., 2021)"),
    MetricInfo("RefCLIPScore", "reference-free", True, True, 3, "CLIPScore with the references (Hessel et al., 2021)"),
    MetricInfo("copy rate", "copy", True, None, 3, "share of captions equal to a caption shown in the prompt"),
    MetricInfo("prompt overlap", "copy", True, None, 3, "share of a caption's n-grams found in the prompt's captions"),
    MetricInfo("length", "descriptive", True, None, 1, "words per caption"),
    MetricInfo("vocabulary", "descriptive", False, None, 0, "distinct words over all captions"),
    MetricInfo("distinct", "descriptive", False, None, 3, "distinct captions per caption (1: no two photos got the same caption)"),
)
METRIC_INFO = {m.name: m for m in METRICS}
PER_PHOTO = tuple(m.name for m in METRICS if m.per_photo)


def info(metric: str) -> MetricInfo:
    return METRIC_INFO[metric]


def order_label(metric: str) -> str:
    """How ``worst_first_key`` orders a metric, in words."""
    m = METRIC_INFO.get(metric)
    if m is not None and m.family == "copy":
        return "highest first"
    if m is not None and m.higher_is_better is None:
        return "lowest first"
    return "worst first"


def worst_first_key(metric: str, value: float | None, image_id: str) -> tuple[int, float, str]:
    """Sort key putting a metric's worst photos first: lowest quality score, most copied, shortest; photos
    without a value last; equal values (compared at 6 decimals, so float noise never reorders) by photo id."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (1, 0.0, image_id)
    m = METRIC_INFO.get(metric)
    rounded = round(float(value), 6)
    if m is not None and m.family == "copy":
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
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RowScores":
        return cls(**data)


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
    values: dict[str, dict[str, dict[str, float | None]]]        # row -> metric -> value, low, high
    vs_baseline: dict[str, dict[str, dict[str, float | None]]]   # row -> metric -> diff, low, high, p
    notes: list[str] = field(default_factory=list)
    row_hashes: dict[str, str] = field(default_factory=dict)   # row -> key of its per-photo scores
    tokenizer: str = ""
    references: str = ""                                  # how references were chosen
    n_boot: int = 0
    confidence: float = 0.95
    created_at: float = 0.0
    seconds: float = 0.0
    n: dict[str, dict[str, int]] = field(default_factory=dict)   # row -> metric -> photos the value is made from

    def get(self, row: str, metric: str) -> dict[str, float | None] | None:
        return self.values.get(row, {}).get(metric)

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
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CaptionMetricsResult":
        return cls(**data)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
