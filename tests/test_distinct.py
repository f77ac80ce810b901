"""Documents grouped by vector: identical bytes share one row, order follows the first document, missing rows
stay out, a hash collision never merges different vectors, and the best documents come out in the tie rule's
order (score descending, document index ascending) with exclusions."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import distinct
from pipeline.distinct import DistinctRows


def dense(d: DistinctRows) -> np.ndarray:
    """The (n, dim) matrix of every document (zeros for missing ones)."""
    out = np.zeros((d.n, d.dim), dtype=np.float32)
    out[d.members] = d.vectors[d.owner[d.members]]
    return out


def with_duplicates(n_distinct: int, n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) rows drawn from n_distinct random vectors, and which vector each row is."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_distinct, dim)).astype(np.float32)
    which = rng.integers(0, n_distinct, size=n)
    return base[which], which


def test_identical_rows_share_one_vector_in_order_of_first_document():
    rows = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4], [1, 2]], dtype=np.float32)
    d = DistinctRows.of(rows)
    assert d.owner.tolist() == [0, 1, 0, 2, 1, 0]
    np.testing.assert_array_equal(d.vectors, [[1, 2], [3, 4], [5, 6]])
    assert d.counts.tolist() == [3, 2, 1] and d.members.tolist() == [0, 2, 5, 1, 4, 3]
    np.testing.assert_array_equal(dense(d), rows)


def test_missing_and_non_finite_rows_are_left_out():
    rows = np.array([[1, 2], [np.nan, 0], [1, 2], [np.inf, 1], [7, 8]], dtype=np.float32)
    d = DistinctRows.of(rows, missing=np.array([True, False, False, False, False]))
    assert d.owner.tolist() == [-1, -1, 0, -1, 1] and d.n_present == 2
    scores = d.expand(np.array([[0.5, 0.25]], dtype=np.float32))
    np.testing.assert_array_equal(scores, [[np.nan, np.nan, 0.5, np.nan, 0.25]])
    with pytest.raises(ValueError, match="missing mask has shape"):
        DistinctRows.of(rows, missing=np.zeros(3, dtype=bool))


def test_rows_equal_only_in_value_are_not_merged():
    """Grouping is by bytes: -0.0 and 0.0 compare equal as floats but are different vectors."""
    d = DistinctRows.of(np.array([[0.0, 1.0], [-0.0, 1.0], [0.0, 1.0]], dtype=np.float32))
    assert d.owner.tolist() == [0, 1, 0]


@pytest.mark.parametrize("dim", [1, 3, 384])
def test_grouping_matches_the_vectors_whatever_the_row_width(dim):
    rows, which = with_duplicates(40, 500, dim, seed=dim)
    d = DistinctRows.of(rows)
    # same vector <=> same owner, and every document reads back its own vector
    assert ((d.owner[:, None] == d.owner[None, :]) == (which[:, None] == which[None, :])).all()
    np.testing.assert_array_equal(d.vectors[d.owner], rows)
    first = [int(np.flatnonzero(d.owner == g)[0]) for g in range(len(d.vectors))]
    assert first == sorted(first)


def test_a_hash_collision_never_merges_different_vectors(monkeypatch):
    """Every row hashed alike (the worst collision possible): groups still follow the bytes."""
    rows, which = with_duplicates(25, 300, 16, seed=3)
    honest = DistinctRows.of(rows)
    monkeypatch.setattr(distinct, "_row_hashes", lambda words: np.zeros(words.shape[0], dtype=np.uint64))
    colliding = DistinctRows.of(rows)
    np.testing.assert_array_equal(colliding.owner, honest.owner)
    np.testing.assert_array_equal(colliding.vectors, honest.vectors)


def test_from_rows_reads_shared_rows_once_and_orders_by_document():
    matrix = np.array([[9, 9], [1, 0], [0, 1], [1, 0]], dtype=np.float32)   # rows 1 and 3 are the same vector
    d = DistinctRows.from_rows(6, doc=[5, 0, 2, 3], src=[1, 2, 3, 2], matrix=matrix)
    assert d.owner.tolist() == [0, -1, 1, 0, -1, 1]
    np.testing.assert_array_equal(d.vectors, [[0, 1], [1, 0]])
    empty = DistinctRows.from_rows(3, doc=[], src=[], matrix=None, dim=5)
    assert empty.vectors.shape == (0, 5) and empty.missing.all()
    np.testing.assert_array_equal(empty.expand(np.zeros((2, 0), dtype=np.float32)), np.full((2, 3), np.nan))


def test_take_gives_the_same_vectors_to_other_documents():
    rows, _ = with_duplicates(5, 30, 4, seed=1)
    d = DistinctRows.of(rows, missing=np.arange(30) % 7 == 0)
    perm = np.random.default_rng(2).permutation(30)
    np.testing.assert_array_equal(dense(d.take(perm)), dense(d)[perm])
    np.testing.assert_array_equal(d.take(perm).missing, d.missing[perm])


def brute_force_best(d: DistinctRows, scores: np.ndarray, k: int, exclude=()) -> np.ndarray:
    """Every document scored, excluded pairs dropped, sorted by (score desc, index asc), first k (-1 padded)."""
    full = d.expand(scores).astype(np.float64)
    out = np.full((scores.shape[0], k), -1)
    for q in range(scores.shape[0]):
        s = full[q].copy()
        for r, c in exclude:
            if r == q:
                s[c] = np.nan
        docs = np.flatnonzero(~np.isnan(s))
        docs = docs[np.lexsort((docs, -s[docs]))][:k]
        out[q, :docs.size] = docs
    return out


@pytest.mark.parametrize("k", [1, 3, 8, 60])
def test_best_documents_equal_a_full_sort_with_ties_and_exclusions(k):
    rng = np.random.default_rng(k)
    rows, _ = with_duplicates(12, 50, 3, seed=k)
    d = DistinctRows.of(rows, missing=rng.random(50) < 0.1)
    m = len(d.vectors)
    scores = rng.integers(0, 4, size=(6, m)).astype(np.float32)       # few values: many ties between vectors too
    exclude = [(int(rng.integers(0, 6)), int(c)) for c in rng.choice(np.flatnonzero(~d.missing), 5)]
    extra = max(sum(1 for r, _ in exclude if r == q) for q in range(6))
    g = min(k + extra, m)
    order = np.lexsort((np.broadcast_to(np.arange(m), scores.shape), -scores), axis=1)[:, :g]
    idx, sc = d.best_documents(order, np.take_along_axis(scores, order, axis=1), k,
                               exclude=(np.array([r for r, _ in exclude]), np.array([c for _, c in exclude])))
    np.testing.assert_array_equal(idx, brute_force_best(d, scores, k, exclude))
    full = d.expand(scores)
    found = idx >= 0
    np.testing.assert_array_equal(sc[found], full[np.nonzero(found)[0], idx[found]])
    assert np.isnan(sc[~found]).all()
