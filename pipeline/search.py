"""Cosine search over L2-normalised embeddings (numpy only).

Queries and documents are float32 rows of unit length, so cosine similarity is a
dot product. Documents may be *missing* (a photo whose caption failed): they get
NaN in score matrices and never appear in a top-k list. A document is missing when
``missing[i]`` is True or when its row contains NaN.

Identical vectors, identical scores
-----------------------------------
Documents are scored as ``pipeline.distinct.DistinctRows``: each distinct vector
once per query, its score copied to every document that has it. Photos whose
captions are the same text (or, for ``clip``, whose images are the same) therefore
tie exactly on every machine, whatever the BLAS kernel's rounding. Pass a
``DistinctRows`` to score the same documents many times without grouping them
again; a plain matrix is grouped on each call.

Ties
----
The display order (``top_k``, ``top_k_batch``, ``top_from_scores``): higher score
first, ties by the lower document index. Callers keep documents in photo id order
(``SearchIndex`` sorts its targets by id), so tied photos are listed by id,
ascending. The evaluation does not break ties: it scores a tied true photo by its
expected rank under random tie-breaking (``pipeline.metrics``).

Top-k is computed in blocks of distinct vectors (and of queries), so memory stays
bounded by ``query_block * block_size`` scores whatever the collection size: each
block is reduced to its k best with ``argpartition`` and merged with the running
best; the final k distinct vectors (ties by their first document) are expanded to
documents, taking at most k from each. Blocked and unblocked search return the
same list.

Hybrid scores
-------------
Scores from different embedders live on different scales (CLIP image-text cosines
sit in a narrow band around 0.2-0.35, sentence-embedding cosines spread over
0-0.9). ``hybrid`` therefore standardises each part per query (z-score: subtract
the query's mean over scored documents, divide by their standard deviation; a
constant row becomes 0) and returns ``weight * z(first) + (1 - weight) * z(second)``
(so ``hybrid(caption_scores, clip_scores, search.hybrid_weight)`` gives the caption part its
configured weight).
Within one part this is a per-query increasing affine map, so ranking by one part
alone is unchanged. A document missing in a part with non-zero weight is NaN, unless
``fill_missing`` (searching a whole collection, and search by example): then a document
missing in the first part only gets the second part's z-score alone, so a photo nobody
captioned is still ranked by its image. The combination is elementwise, so two photos with the same caption vector and the same
image vector get the same hybrid score.
"""
from __future__ import annotations

import numpy as np

from pipeline.distinct import DistinctRows, row_blocks

DEFAULT_BLOCK_SIZE = 65536
DEFAULT_QUERY_BLOCK = 256


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {x.shape}")
    return x


def distinct_documents(documents: np.ndarray | DistinctRows, missing: np.ndarray | None = None) -> DistinctRows:
    """``documents`` grouped by vector (a ``DistinctRows`` is returned as it is; then ``missing`` must be None)."""
    if isinstance(documents, DistinctRows):
        if missing is not None:
            raise ValueError("a DistinctRows carries its own missing documents; pass no mask")
        return documents
    return DistinctRows.of(_as_matrix(documents, "documents"), missing)


def _check_queries(queries: np.ndarray, docs: DistinctRows) -> np.ndarray:
    q = _as_matrix(queries, "queries")
    if q.shape[1] != docs.dim:
        raise ValueError(f"query dim {q.shape[1]} does not match document dim {docs.dim}")
    bad = ~np.isfinite(q).all(axis=1)
    if bad.any():
        raise ValueError(f"query {int(np.flatnonzero(bad)[0])} has a non-finite embedding")
    return q


def cosine_scores(queries: np.ndarray, documents: np.ndarray | DistinctRows,
                  missing: np.ndarray | None = None) -> np.ndarray:
    """Full score matrix (n_queries, n_documents) float32; NaN for missing documents; identical document
    vectors get identical scores."""
    docs = distinct_documents(documents, missing)
    q = _check_queries(queries, docs)
    return docs.expand(docs.score(q))


def _select(scores: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score desc, index asc) of each row; scores use -inf for missing documents."""
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        chosen = np.take_along_axis(scores, part, axis=1)
        kth = chosen.min(axis=1, keepdims=True)
        ambiguous = np.flatnonzero((scores == kth).sum(axis=1) > (chosen == kth).sum(axis=1))
        for r in ambiguous:  # ties straddle the k-th place: keep the lowest document indices
            above = np.flatnonzero(scores[r] > kth[r, 0])
            tied = np.flatnonzero(scores[r] == kth[r, 0])
            tied = tied[np.argsort(index[r, tied], kind="stable")][: k - above.size]
            part[r] = np.concatenate([above, tied])
        scores = np.take_along_axis(scores, part, axis=1)
        index = np.take_along_axis(index, part, axis=1)
    order = np.lexsort((index, -scores), axis=-1)
    return np.take_along_axis(index, order, axis=1), np.take_along_axis(scores, order, axis=1)


def top_k_batch(
    queries: np.ndarray,
    documents: np.ndarray | DistinctRows,
    k: int,
    missing: np.ndarray | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    query_block: int = DEFAULT_QUERY_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n_queries, k') int64 and scores (n_queries, k') float32 of the best documents.

    ``k' = min(k, number of non-missing documents)``; rows are best first, ties by the lower index.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if block_size < 1 or query_block < 1:
        raise ValueError("block_size and query_block must be >= 1")
    docs = distinct_documents(documents, missing)
    q = _check_queries(queries, docs)
    vectors = docs.vectors
    n_q, n_u = q.shape[0], vectors.shape[0]
    width = min(k, docs.n_present)
    out_idx = np.full((n_q, width), -1, dtype=np.int64)
    out_sc = np.full((n_q, width), np.nan, dtype=np.float32)
    if width == 0:
        return out_idx, out_sc
    for q0 in range(0, n_q, query_block):
        qb = q[q0:q0 + query_block]
        best_idx = np.empty((qb.shape[0], 0), dtype=np.int64)
        best_sc = np.empty((qb.shape[0], 0), dtype=np.float32)
        for pos, block in row_blocks(vectors, block_size):
            sc = qb @ block.T
            idx = np.broadcast_to(pos, sc.shape)
            sc = np.concatenate([best_sc, sc], axis=1)
            idx = np.concatenate([best_idx, idx], axis=1)
            best_idx, best_sc = _select(sc, idx, min(k, sc.shape[1]))
        idx, sc = docs.best_documents(best_idx, best_sc, width)
        out_idx[q0:q0 + qb.shape[0]] = idx
        out_sc[q0:q0 + qb.shape[0]] = sc
    return out_idx, out_sc


def top_k(
    query: np.ndarray,
    documents: np.ndarray | DistinctRows,
    k: int,
    missing: np.ndarray | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k for one query vector (dim,): indices (k',) and scores (k'), best first."""
    query = np.asarray(query, dtype=np.float32)
    if query.ndim != 1:
        raise ValueError(f"query must be a vector, got shape {query.shape}")
    idx, sc = top_k_batch(query[None, :], documents, k, missing=missing, block_size=block_size)
    return idx[0], sc[0]


def top_from_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row of a score matrix (higher first, lower index first on ties, NaN never);
    rows shorter than k are padded with index -1 and NaN."""
    s = np.asarray(scores, dtype=np.float32)
    s = np.where(np.isnan(s), -np.inf, s)
    n_q, n = s.shape
    k = max(1, min(k, n))
    if k < n:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(s, part, axis=1).min(axis=1)
        cand = [np.flatnonzero(s[r] >= kth[r]) for r in range(n_q)]
    else:
        cand = [np.arange(n) for _ in range(n_q)]
    idx = np.full((n_q, k), -1, dtype=np.int64)
    out = np.full((n_q, k), np.nan, dtype=np.float32)
    for r, c in enumerate(cand):
        c = c[np.isfinite(s[r, c])]
        c = c[np.lexsort((c, -s[r, c]))][:k]
        idx[r, :c.size] = c
        out[r, :c.size] = s[r, c]
    return idx, out


def standardise_scores(scores: np.ndarray) -> np.ndarray:
    """Per-row z-score over the non-NaN entries (constant rows become 0; NaN stays NaN)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be a matrix (n_queries, n_documents), got shape {s.shape}")
    valid = ~np.isnan(s)
    count = valid.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, s, 0.0).sum(axis=1, keepdims=True) / count
        centred = s - mean
        std = np.sqrt(np.where(valid, centred * centred, 0.0).sum(axis=1, keepdims=True) / count)
        z = np.where(std > 0, centred / np.where(std > 0, std, 1.0), 0.0)
    return np.where(valid, z, np.nan).astype(np.float32)


def hybrid(first: np.ndarray, second: np.ndarray, weight: float = 0.5, *, fill_missing: bool = False) -> np.ndarray:
    """``weight * z(first) + (1 - weight) * z(second)`` for aligned score matrices (see module doc)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"hybrid weight must be between 0 and 1, got {weight}")
    a = np.asarray(first, dtype=np.float32)
    b = np.asarray(second, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"hybrid needs aligned score matrices, got {a.shape} and {b.shape}")
    if fill_missing:
        za, zb = standardise_scores(a), standardise_scores(b)
        both = (weight * za + (1.0 - weight) * zb).astype(np.float32)
        return np.where(np.isnan(za), zb, both).astype(np.float32)
    if weight == 1.0:
        return standardise_scores(a)
    if weight == 0.0:
        return standardise_scores(b)
    return (weight * standardise_scores(a) + (1.0 - weight) * standardise_scores(b)).astype(np.float32)
