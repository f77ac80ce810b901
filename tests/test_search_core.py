"""Cosine ranking, identical vectors tying wherever they sit, blocked top-k, missing documents and hybrid scores."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import rank_bounds
from pipeline.search import (
    cosine_scores,
    hybrid,
    l2_normalise,
    standardise_scores,
    top_k,
    top_k_batch,
)


def _docs() -> np.ndarray:
    # unit vectors at known angles from the x axis: 0, 30, 60, 90, 180 degrees
    angles = np.deg2rad([60, 0, 180, 30, 90])
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def test_ranking_order_on_hand_made_vectors():
    idx, sc = top_k(np.array([1.0, 0.0], dtype=np.float32), _docs(), k=3)
    assert idx.tolist() == [1, 3, 0]
    np.testing.assert_allclose(sc, [1.0, np.cos(np.pi / 6), 0.5], atol=1e-6)
    idx, _ = top_k(np.array([0.0, 1.0], dtype=np.float32), _docs(), k=3)
    assert idx.tolist() == [4, 0, 3]


def test_k_beyond_the_collection_returns_everything_sorted():
    idx, sc = top_k(np.array([1.0, 0.0], dtype=np.float32), _docs(), k=50)
    assert idx.tolist() == [1, 3, 0, 4, 2]
    assert np.all(np.diff(sc) <= 0)


def test_ties_are_broken_by_lower_document_index():
    docs = np.array([[0, 1], [1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    idx, sc = top_k(np.array([1.0, 0.0], dtype=np.float32), docs, k=2)
    assert idx.tolist() == [1, 3]
    for bs in (1, 2, 3):
        assert top_k(np.array([1.0, 0.0], dtype=np.float32), docs, k=2, block_size=bs)[0].tolist() == [1, 3]


def test_missing_documents_are_nan_and_never_returned():
    docs = _docs()
    missing = np.array([False, True, False, False, False])
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    full = cosine_scores(q, docs, missing=missing)
    assert np.isnan(full[0, 1]) and np.isfinite(full[0, [0, 2, 3, 4]]).all()
    idx, _ = top_k_batch(q, docs, k=10, missing=missing)
    assert idx.tolist() == [[3, 0, 4, 2]]
    docs_nan = docs.copy()
    docs_nan[3] = np.nan                       # a NaN row counts as missing too
    idx, sc = top_k_batch(q, docs_nan, k=10, missing=missing, block_size=2)
    assert idx.tolist() == [[0, 4, 2]] and np.isfinite(sc).all()
    # the missing target ranks at the bottom in evaluation
    b = rank_bounds(full, [1])
    assert (b.better[0], b.tied[0]) == (4, 1)


@pytest.mark.parametrize("block_size,query_block", [(1, 1), (7, 3), (64, 5), (1000, 1000)])
def test_blocked_equals_unblocked(block_size, query_block):
    rng = np.random.default_rng(0)
    docs = l2_normalise(rng.normal(size=(300, 16)))
    queries = l2_normalise(rng.normal(size=(23, 16)))
    missing = rng.random(300) < 0.1
    ref_idx, ref_sc = top_k_batch(queries, docs, k=10, missing=missing, block_size=10**6, query_block=10**6)
    idx, sc = top_k_batch(queries, docs, k=10, missing=missing, block_size=block_size, query_block=query_block)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sc, ref_sc, atol=1e-6)
    # and both agree with a full sort of the score matrix
    full = cosine_scores(queries, docs, missing=missing)
    expected = np.argsort(-np.nan_to_num(full, nan=-np.inf), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ref_idx, expected)
    assert not np.isin(ref_idx, np.flatnonzero(missing)).any()


# Rows where a BLAS kernel's blocking, FMA and tail handling differ: the start, block and tail edges.
DUPLICATE_AT = [0, 1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 100, 127, 129, 255, 257, 511, 999]


def test_identical_vectors_get_identical_scores_wherever_they_sit():
    """The same caption vector at 20 places in a 1000 x 384 matrix, scored by 300 queries at once (a matrix
    product: OpenBLAS's Haswell and Zen kernels give such rows different last bits) and one at a time."""
    rng = np.random.default_rng(0)
    docs = l2_normalise(rng.normal(size=(1000, 384)))
    docs[DUPLICATE_AT] = docs[0]
    queries = l2_normalise(rng.normal(size=(300, 384)))
    for q in (queries, queries[:64], queries[:1]):
        scores = cosine_scores(q, docs)
        assert (scores[:, DUPLICATE_AT] == scores[:, :1]).all()
    # so a photo among the copies always ties with all of them, and top-k lists the copies by index
    bounds = rank_bounds(cosine_scores(queries, docs), np.full(300, DUPLICATE_AT[7]))
    assert (bounds.tied == len(DUPLICATE_AT)).all()
    near = l2_normalise(docs[0] + 0.05 * rng.normal(size=(300, 384)))       # queries whose best match is the copies
    idx, _ = top_k_batch(near, docs, k=25)
    assert (idx[:, :len(DUPLICATE_AT)] == DUPLICATE_AT).all()


@pytest.mark.parametrize("block_size,query_block,k", [(1, 1, 5), (3, 7, 10), (64, 5, 40), (1000, 1000, 300)])
def test_blocked_top_k_with_many_duplicates_equals_a_full_sort(block_size, query_block, k):
    """Groups of 1-30 identical rows: the blocked top-k (over distinct rows, expanded) equals sorting every
    document by (score desc, index asc)."""
    rng = np.random.default_rng(k)
    base = l2_normalise(rng.normal(size=(40, 8)))
    docs = base[rng.integers(0, 40, size=400)]
    missing = rng.random(400) < 0.1
    queries = np.concatenate([l2_normalise(rng.normal(size=(20, 8))), base[:3]])
    idx, sc = top_k_batch(queries, docs, k=k, missing=missing, block_size=block_size, query_block=query_block)
    full = cosine_scores(queries, docs, missing=missing)
    for q in range(len(queries)):
        present = np.flatnonzero(~np.isnan(full[q]))
        expected = present[np.lexsort((present, -full[q, present]))][:k]
        assert idx[q].tolist() == expected.tolist()
        np.testing.assert_allclose(sc[q], full[q, expected], atol=1e-6)   # another product: last bits may differ


def test_bad_input_is_named():
    docs = _docs()
    with pytest.raises(ValueError, match="dim 3 does not match document dim 2"):
        top_k(np.ones(3, dtype=np.float32), docs, k=1)
    q = np.array([[1, 0], [np.nan, 0]], dtype=np.float32)
    with pytest.raises(ValueError, match="query 1 has a non-finite embedding"):
        top_k_batch(q, docs, k=1)


def test_hybrid_weight_zero_and_one_equal_each_part():
    rng = np.random.default_rng(1)
    caption = rng.normal(0.5, 0.2, size=(6, 9)).astype(np.float32)
    clip = rng.normal(0.25, 0.03, size=(6, 9)).astype(np.float32)
    caption[:, 4] = np.nan                     # a target without caption
    # weight is the share of the first part
    np.testing.assert_array_equal(hybrid(caption, clip, weight=1.0), standardise_scores(caption))
    np.testing.assert_array_equal(hybrid(caption, clip, weight=0.0), standardise_scores(clip))
    # standardising keeps each part's ranking, and weight 0 ignores the missing caption
    assert (np.argsort(-hybrid(caption, clip, 0.0), axis=1) == np.argsort(-clip, axis=1)).all()
    finite = np.isfinite(caption[0])
    assert (np.argsort(-hybrid(caption, clip, 1.0)[0][finite]) == np.argsort(-caption[0][finite])).all()
    mixed = hybrid(caption, clip, weight=0.3)
    assert np.isnan(mixed[:, 4]).all()
    z = standardise_scores(caption)
    np.testing.assert_allclose(np.nanmean(z, axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(np.nanstd(z, axis=1), 1, atol=1e-5)


def test_hybrid_balances_parts_on_different_scales():
    # part a prefers doc 0 by a wide margin on its scale; part b prefers doc 1 by a tiny absolute margin
    # that is just as large relative to its own spread, so the 50/50 hybrid ties them.
    a = np.array([[0.9, 0.1, 0.5]], dtype=np.float32)
    b = np.array([[0.22, 0.30, 0.26]], dtype=np.float32)
    h = hybrid(a, b, 0.5)
    assert h[0, 0] == pytest.approx(h[0, 1], abs=1e-5)
    assert hybrid(a, b, 0.6)[0].argmax() == 0 and hybrid(a, b, 0.4)[0].argmax() == 1
    with pytest.raises(ValueError, match="aligned"):
        hybrid(a, b[:, :2])
    with pytest.raises(ValueError, match="between 0 and 1"):
        hybrid(a, b, 1.5)
