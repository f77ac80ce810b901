"""Bootstrap intervals, the paired test and Spearman's rho for caption metrics.

Every caption metric is a function of per-photo data: a score per photo (averaged) or per-photo counts
(BLEU's n-gram counts, METEOR's statistics, summed and then scored). The bootstrap resamples photos with
the same seeded indices as the retrieval metrics (``pipeline.metrics``), recomputes the metric on each
resample, and reports the percentile interval; the paired test resamples the same photos for a row and
the baseline and reports the difference with the same two-sided p-value as ``metrics.paired_bootstrap``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.estimates import Difference, Estimate
from pipeline.metrics import resampled  # noqa: F401 - the metric on seeded resamples of the photos, shared

Aggregate = Callable[[np.ndarray], np.ndarray]     # (..., n_photos, d) -> (...)


def mean_of_scores(data: np.ndarray) -> np.ndarray:
    """The mean over photos of a per-photo score (column 0); photos without a score (NaN) are left out."""
    values = data[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(np.isnan(values), 0.0, values).sum(axis=-1)
        count = (~np.isnan(values)).sum(axis=-1)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def interval(point: float, boot: np.ndarray, confidence: float = 0.95) -> Estimate:
    """The percentile interval of resampled values around a point estimate."""
    finite = boot[np.isfinite(boot)]
    if finite.size == 0:
        return Estimate(float(point), float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Estimate(float(point), float(low), float(high))


def difference(point: float, boot: np.ndarray, boot_baseline: np.ndarray, confidence: float = 0.95) -> Difference:
    """row - baseline from resamples of the same photos: percentile interval and two-sided p-value (as
    ``metrics.paired_bootstrap``)."""
    diffs = boot - boot_baseline
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return Difference(float(point), float("nan"), float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [alpha, 1.0 - alpha])
    tail = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    p = min(1.0, 2.0 * (tail + 1) / (diffs.size + 1))
    return Difference(float(point), float(low), float(high), float(p))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2.0
            start = end
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (Pearson correlation of average ranks); NaN pairs are dropped; NaN when undefined."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return float("nan")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")
