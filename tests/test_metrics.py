"""Ranks with ties and missing scores, Recall@K / MRR / median rank, bootstrap intervals and paired tests."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pipeline.metrics import (
    RankBounds,
    evaluate_ranks,
    paired_bootstrap,
    per_query_metrics,
    rank_bounds,
    recall_at_k,
    reciprocal_rank,
)

NAN = float("nan")


def test_ties_give_the_expected_value_over_random_tie_breaking():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    b = rank_bounds(scores, 2)
    assert (b.better[0], b.tied[0]) == (1, 3)          # rank uniform over 2, 3, 4
    assert recall_at_k(b, 1)[0] == 0.0
    assert recall_at_k(b, 2)[0] == pytest.approx(1 / 3)
    assert recall_at_k(b, 3)[0] == pytest.approx(2 / 3)
    assert recall_at_k(b, 4)[0] == 1.0
    assert reciprocal_rank(b)[0] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    assert b.expected[0] == 3.0


def test_tie_formulas_match_enumerating_every_tie_break():
    scores = np.array([0.2, 0.7, 0.7, 0.1, 0.7, 0.7, 0.9])
    true = 4
    tied = np.flatnonzero(scores == scores[true])
    ranks = []
    for order in itertools.permutations(tied):
        # items strictly better come first, then the tie group in this order
        ranks.append(int((scores > scores[true]).sum()) + list(order).index(true) + 1)
    b = rank_bounds(scores, true)
    for k in (1, 2, 3, 4, 5, 7):
        assert recall_at_k(b, k)[0] == pytest.approx(np.mean([r <= k for r in ranks]))
    assert reciprocal_rank(b)[0] == pytest.approx(np.mean([1 / r for r in ranks]))
    assert b.expected[0] == pytest.approx(np.mean(ranks))


def test_missing_scores_rank_below_every_scored_item():
    scores = np.array([[0.3, NAN, 0.8, NAN, 0.1],
                       [0.3, NAN, 0.8, NAN, 0.1]])
    b = rank_bounds(scores, [1, 0])
    # query 0: its target has no caption -> bottom ranks 4..5 (three scored items above it)
    assert (b.better[0], b.tied[0]) == (3, 2)
    assert reciprocal_rank(b)[0] == pytest.approx((1 / 4 + 1 / 5) / 2)
    assert recall_at_k(b, 4)[0] == pytest.approx(0.5)
    assert recall_at_k(b, 3)[0] == 0.0
    # query 1: scored target; NaN items do not count as better
    assert (b.better[1], b.tied[1]) == (1, 1)


def test_k_larger_than_the_collection_gives_recall_one():
    scores = np.array([[0.1, 0.5, 0.3], [NAN, 0.2, 0.4]])
    b = rank_bounds(scores, [0, 0])
    assert recall_at_k(b, 10).tolist() == [1.0, 1.0]
    ev = evaluate_ranks(b, ks=(1, 50), n_boot=50)
    assert ev["R@50"].value == 1.0


def test_perfect_and_reversed_rankings():
    n = 10
    perfect = rank_bounds(np.eye(n), np.arange(n))
    ev = evaluate_ranks(perfect, n_boot=100)
    assert (ev["R@1"].value, ev["R@5"].value, ev["R@10"].value) == (1.0, 1.0, 1.0)
    assert (ev["MRR"].value, ev["MedR"].value) == (1.0, 1.0)

    reversed_ = rank_bounds(-np.eye(n), np.arange(n))
    # every other item scores 0 > -1: the true item is always last
    ev = evaluate_ranks(reversed_, n_boot=100)
    assert (ev["R@1"].value, ev["R@5"].value, ev["R@10"].value) == (0.0, 0.0, 1.0)
    assert ev["MRR"].value == pytest.approx(0.1)
    assert ev["MedR"].value == 10.0


def test_median_rank_is_the_median_of_expected_ranks():
    b = RankBounds(better=np.array([0, 1, 9, 4]), tied=np.array([1, 3, 1, 2]))   # expected 1, 3, 10, 5.5
    assert evaluate_ranks(b, n_boot=10)["MedR"].value == pytest.approx(4.25)
    assert per_query_metrics(b, ks=(1,))[:, -1].tolist() == [1.0, 3.0, 10.0, 5.5]


def _random_bounds(n: int, seed: int) -> RankBounds:
    rng = np.random.default_rng(seed)
    return RankBounds(better=rng.geometric(0.3, size=n) - 1, tied=np.ones(n, dtype=np.int64))


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_queries():
    small = evaluate_ranks(_random_bounds(40, 1), n_boot=500, seed=3)
    large = evaluate_ranks(_random_bounds(4000, 1), n_boot=500, seed=3)
    for name in ("R@1", "R@5", "R@10", "MRR", "MedR"):
        for ev in (small, large):
            e = ev[name]
            assert e.low <= e.value <= e.high, name
    for name in ("R@1", "MRR"):
        assert large[name].high - large[name].low < 0.5 * (small[name].high - small[name].low)
    assert small["R@1"].high - small["R@1"].low > 0


def test_bootstrap_is_deterministic_for_a_seed():
    b = _random_bounds(200, 7)
    assert evaluate_ranks(b, seed=5).metrics == evaluate_ranks(b, seed=5).metrics
    assert evaluate_ranks(b, seed=5).metrics != evaluate_ranks(b, seed=6).metrics
    assert paired_bootstrap(b, _random_bounds(200, 8), seed=5) == paired_bootstrap(b, _random_bounds(200, 8), seed=5)


def test_bootstrap_resamples_are_the_published_ones_and_fit_in_tens_of_megabytes():
    """The resamples are drawn a chunk at a time to bound memory; they must stay the rows of one seeded
    (n_boot, n) draw, so intervals and p-values stored by earlier versions are reproduced exactly."""
    import tracemalloc

    from pipeline.metrics import _aggregate, resampled

    for n, n_boot in ((1, 1), (7, 99), (300, 100), (301, 1001)):
        values = per_query_metrics(_random_bounds(n, n))
        one_draw = np.random.default_rng(4).integers(0, n, size=(n_boot, n))
        assert np.array_equal(resampled(values, _aggregate, n_boot, 4), _aggregate(values[one_draw])), (n, n_boot)

    # 10k queries, 1000 resamples: drawn and gathered at once this took 460-540 MB
    a, b = _random_bounds(10_000, 1), _random_bounds(10_000, 2)
    tracemalloc.start()
    try:
        evaluate_ranks(a, n_boot=1000)
        paired_bootstrap(a, b, n_boot=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_paired_test_identical_methods_give_p_one():
    b = _random_bounds(300, 2)
    for name, d in paired_bootstrap(b, b, n_boot=400).items():
        assert d.diff == 0.0 and d.low == 0.0 and d.high == 0.0, name
        assert d.p == 1.0, name


def test_paired_test_detects_a_clearly_better_method():
    baseline = _random_bounds(300, 4)
    better = RankBounds(better=baseline.better // 3, tied=baseline.tied)
    res = paired_bootstrap(better, baseline, n_boot=1000, seed=0)
    assert res["MRR"].diff > 0 and res["MRR"].low > 0 and res["MRR"].p < 0.01
    assert res["R@1"].p < 0.01
    assert res["MedR"].diff < 0                            # lower rank is better
    assert not math.isnan(res["R@10"].p)


def test_paired_test_needs_the_same_queries():
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(_random_bounds(10, 0), _random_bounds(11, 0))


def test_bad_true_index_names_the_query():
    with pytest.raises(ValueError, match="query 1: true index 5"):
        rank_bounds(np.zeros((2, 3)), [0, 5])
