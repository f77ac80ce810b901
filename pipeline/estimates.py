"""A metric's estimate and a paired difference: the one shape of each, from the metrics to every reader.

``Estimate`` is a value with its bootstrap interval; ``Difference`` is ``method - baseline`` on the same queries
(or photos) with its percentile interval and two-sided p-value. The retrieval metrics (``pipeline.metrics``) and
the caption metrics (``pipeline.caption_metrics.stats``) make them, the results (``EvaluationResult``,
``CaptionMetricsResult``) and the store's rows (``EvaluationRow``, ``CaptionMetricValue``) hold them, and the CLI,
``--json``, the report, the TUI and the Prefect artifacts read them (``pipeline.metric_facts`` formats them).

In JSON (``--json``, ``metrics.json``, the stored summaries) an estimate is ``{"value", "low", "high"}`` and a
difference ``{"diff", "low", "high", "p"}`` (``dataclasses.asdict`` writes exactly that), NaN written as null.
Standard library only: every layer imports it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

CONFIDENCE = 0.95             # the level of every interval an estimate or a difference carries
SIGNIFICANCE = 0.05          # a difference whose p is below this is called better or worse


def finite(value: Any) -> float | None:
    """``value`` as a float, or None where there is none (None, NaN, an infinity)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def json_safe(obj: Any) -> Any:
    """``obj`` (dicts, lists, numbers) with NaN and infinities as None, so that it is valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


@dataclass(frozen=True)
class Estimate:
    """A metric's value with its bootstrap interval; ``low``/``high`` are None where there is no interval (a count
    such as the vocabulary) and ``value`` is None or NaN where nothing was measured."""

    value: float | None
    low: float | None = None
    high: float | None = None

    @property
    def known(self) -> bool:
        return finite(self.value) is not None

    @property
    def has_interval(self) -> bool:
        return finite(self.low) is not None and finite(self.high) is not None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Estimate":
        return cls(data.get("value"), data.get("low"), data.get("high"))

    def stored(self) -> "Estimate":
        """NaN and infinities as None (what the store and JSON keep)."""
        return Estimate(finite(self.value), finite(self.low), finite(self.high))


@dataclass(frozen=True)
class Difference:
    """``method - baseline`` for one metric: the difference, its percentile interval and the two-sided p-value."""

    diff: float | None
    low: float | None
    high: float | None
    p: float | None

    @property
    def significant(self) -> bool:
        """Whether the difference is not 0 and its p-value is below ``SIGNIFICANCE``."""
        d, p = finite(self.diff), finite(self.p)
        return d is not None and d != 0 and p is not None and p < SIGNIFICANCE

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Difference":
        return cls(data.get("diff"), data.get("low"), data.get("high"), data.get("p"))

    def stored(self) -> "Difference":
        return Difference(finite(self.diff), finite(self.low), finite(self.high), finite(self.p))
