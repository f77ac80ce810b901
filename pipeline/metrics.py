"""Retrieval metrics with bootstrap confidence intervals (numpy only).

Ranks and ties
--------------
For one query, let ``g`` be the number of items scoring strictly higher than the
true item and ``t`` the number tied with it (itself included). Under uniformly
random tie-breaking the true item's rank is uniform over ``g+1 .. g+t``, and every
metric is its expected value over that range:

* Recall@K = fraction of the range that is <= K (so K >= collection size gives 1);
* reciprocal rank = mean of 1/r over the range;
* expected rank = (g+1 + g+t) / 2, whose median over queries is the median rank.

This is capsearch's one rule for a tied true item in evaluation (and in ``rank_of``):
ties are never broken by position. Ties are exact because scores come from
``pipeline.distinct`` (identical vectors scored once), so ``t`` counts every photo with
the same caption vector on any CPU. Lists shown to a user break ties differently, by
photo id ascending (``pipeline.search``).

Items without a score (NaN, e.g. a photo whose caption failed) rank below every
scored item and are tied among themselves; a query whose true item has no score
therefore gets the bottom ranks ``n_scored+1 .. n``. A truncated ranking that does
not contain the true item is treated the same way: the true item lies uniformly
among the items that were not listed.

Bootstrap
---------
Confidence intervals resample queries with replacement (seeded, percentile
method). The paired test resamples the same query indices for a method and a
baseline and reports the difference ``method - baseline`` of each metric with its
percentile interval and a two-sided p-value
``p = min(1, 2 * (min(#{d* <= 0}, #{d* >= 0}) + 1) / (n_boot + 1))``, the smallest
level at which the percentile interval would exclude 0 (add-one so p is never 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from pipeline.estimates import Difference, Estimate

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class RankBounds:
    """Per-query rank ranges: the true item's rank is uniform over ``better+1 .. better+tied``."""

    better: np.ndarray   # int64 (n_queries,): items scoring strictly higher than the true item
    tied: np.ndarray     # int64 (n_queries,) >= 1: items tied with the true item, itself included

    def __post_init__(self) -> None:
        if self.better.shape != self.tied.shape or self.better.ndim != 1:
            raise ValueError("better and tied must be 1-D arrays of the same length")
        if self.tied.size and int(self.tied.min()) < 1:
            raise ValueError("tied counts must be >= 1 (the true item is tied with itself)")

    def __len__(self) -> int:
        return int(self.better.shape[0])

    @property
    def expected(self) -> np.ndarray:
        """Expected rank (1-based) of each query's true item."""
        return self.better + (self.tied + 1) / 2.0

    def take(self, index: np.ndarray) -> "RankBounds":
        return RankBounds(self.better[index], self.tied[index])


def rank_bounds(scores: np.ndarray, true_index: np.ndarray | Sequence[int] | int) -> RankBounds:
    """Rank ranges of the true items from a score matrix (n_queries, n_items) or one score vector.

    ``true_index[q]`` is the column of query q's true item. NaN scores rank below all others.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2:
        raise ValueError(f"scores must be a vector or a matrix, got shape {s.shape}")
    n_q, n_items = s.shape
    idx = np.atleast_1d(np.asarray(true_index, dtype=np.int64))
    if idx.shape != (n_q,):
        raise ValueError(f"expected {n_q} true indices, got shape {idx.shape}")
    bad = (idx < 0) | (idx >= n_items)
    if bad.any():
        q = int(np.flatnonzero(bad)[0])
        raise ValueError(f"query {q}: true index {int(idx[q])} is outside 0..{n_items - 1}")
    true = s[np.arange(n_q), idx][:, None]
    nan = np.isnan(s)
    true_missing = np.isnan(true[:, 0])
    better = np.where(true_missing, (~nan).sum(axis=1), (s > true).sum(axis=1))
    tied = np.where(true_missing, nan.sum(axis=1), (s == true).sum(axis=1))
    return RankBounds(better.astype(np.int64), tied.astype(np.int64))


def recall_at_k(bounds: RankBounds, k: int) -> np.ndarray:
    """Per-query expected Recall@K: the fraction of the rank range that is <= K."""
    if k < 1:
        raise ValueError(f"K must be >= 1, got {k}")
    return np.clip(k - bounds.better, 0, bounds.tied) / bounds.tied


def reciprocal_rank(bounds: RankBounds) -> np.ndarray:
    """Per-query expected reciprocal rank: mean of 1/r for r in better+1 .. better+tied."""
    if len(bounds) == 0:
        return np.zeros(0)
    top = int((bounds.better + bounds.tied).max())
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
    return (harmonic[bounds.better + bounds.tied] - harmonic[bounds.better]) / bounds.tied


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    return [f"R@{k}" for k in ks] + ["MRR", "MedR"]


def per_query_metrics(bounds: RankBounds, ks: Sequence[int] = DEFAULT_KS) -> np.ndarray:
    """Matrix (n_queries, len(ks) + 2): Recall@K columns, reciprocal rank, expected rank."""
    cols = [recall_at_k(bounds, k) for k in ks] + [reciprocal_rank(bounds), bounds.expected]
    return np.stack(cols, axis=1).astype(np.float64)


def _aggregate(values: np.ndarray) -> np.ndarray:
    """Mean of every column but the last, median of the last (expected rank). Works on (..., n, m)."""
    out = values.mean(axis=-2)
    out[..., -1] = np.median(values[..., -1], axis=-1)
    return out


RESAMPLE_CHUNK = 50        # resamples drawn and gathered at once: (50, n, metrics) float64, 20 MB at 10k queries


def resampled(data: np.ndarray, aggregate: Callable[[np.ndarray], np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """``aggregate`` of ``n_boot`` seeded resamples of the rows of ``data`` (n, ...): the same resamples for
    the same n and seed, whatever the data, so a method and its baseline are resampled alike.

    The resamples are the rows of ``default_rng(seed).integers(0, n, size=(n_boot, n))``, drawn and gathered a
    chunk at a time (the generator's stream is the same; ``tests/test_metrics.py`` holds it to that): drawn
    and gathered at once, the indices and the (n_boot, n, metrics) float64 gather took 460-540 MB at 10k
    queries."""
    n = data.shape[0]
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, n_boot, RESAMPLE_CHUNK):
        index = rng.integers(0, n, size=(min(RESAMPLE_CHUNK, n_boot - start), n))
        parts.append(aggregate(data[index]))
    return np.concatenate(parts)


def _check_boot(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


@dataclass(frozen=True)
class Evaluation:
    """Point estimates with bootstrap intervals, keyed by metric name (R@1, R@5, R@10, MRR, MedR)."""

    n_queries: int
    metrics: dict[str, Estimate]
    n_boot: int
    confidence: float
    seed: int

    def __getitem__(self, name: str) -> Estimate:
        return self.metrics[name]


def evaluate_ranks(
    bounds: RankBounds,
    ks: Sequence[int] = DEFAULT_KS,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Evaluation:
    """Recall@K, MRR and median rank with percentile bootstrap intervals over queries."""
    _check_boot(n_boot, confidence)
    names = metric_names(ks)
    n = len(bounds)
    if n == 0:
        nan = float("nan")
        return Evaluation(0, {k: Estimate(nan, nan, nan) for k in names}, n_boot, confidence, seed)
    values = per_query_metrics(bounds, ks)
    point = _aggregate(values)
    boot = resampled(values, _aggregate, n_boot, seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    metrics = {name: Estimate(float(point[i]), float(low[i]), float(high[i])) for i, name in enumerate(names)}
    return Evaluation(n, metrics, n_boot, confidence, seed)


def paired_bootstrap(
    method: RankBounds,
    baseline: RankBounds,
    ks: Sequence[int] = DEFAULT_KS,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Difference]:
    """Paired bootstrap of ``method`` against ``baseline`` on the same queries (same order).

    For MedR the difference is of medians (lower is better, so a negative difference favours the method).
    """
    _check_boot(n_boot, confidence)
    if len(method) != len(baseline):
        raise ValueError(f"paired test needs the same queries: {len(method)} vs {len(baseline)}")
    names = metric_names(ks)
    n = len(method)
    if n == 0:
        nan = float("nan")
        return {k: Difference(nan, nan, nan, nan) for k in names}
    a, b = per_query_metrics(method, ks), per_query_metrics(baseline, ks)
    point = _aggregate(a) - _aggregate(b)
    m = a.shape[1]             # both methods side by side, so each resample is drawn once for the pair
    diffs = resampled(np.concatenate([a, b], axis=1),
                      lambda x: _aggregate(x[..., :m]) - _aggregate(x[..., m:]), n_boot, seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [alpha, 1.0 - alpha], axis=0)
    tail = np.minimum((diffs <= 0).sum(axis=0), (diffs >= 0).sum(axis=0))
    p = np.minimum(1.0, 2.0 * (tail + 1) / (n_boot + 1))
    return {
        name: Difference(float(point[i]), float(low[i]), float(high[i]), float(p[i]))
        for i, name in enumerate(names)
    }
