"""Cosine search over L2-normalised embeddings (numpy only).

Queries and documents are float32 rows of unit length, so cosine similarity is a
dot product. Documents may be *missing* (a photo whose caption failed): they get
NaN in score matrices and never appear in a top-k list. A document is missing when
``missing[i]`` is True or when its row contains NaN.

Top-k is computed in blocks of documents (and of queries), so memory stays bounded
by ``query_block * block_size`` scores whatever the collection size: each block is
reduced to its k best with ``argpartition`` and merged with the running best, and
only the final k are sorted. Order: higher score first, ties broken by the lower
document index, so blocked and unblocked search return the same list.

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
alone is unchanged. A document missing in a part with non-zero weight is NaN.
"""
from __future__ import annotations

import numpy as np

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


def _check_inputs(
    queries: np.ndarray, documents: np.ndarray, missing: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    q = _as_matrix(queries, "queries")
    d = _as_matrix(documents, "documents")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} does not match document dim {d.shape[1]}")
    bad = ~np.isfinite(q).all(axis=1)
    if bad.any():
        raise ValueError(f"query {int(np.flatnonzero(bad)[0])} has a non-finite embedding")
    if missing is not None:
        missing = np.asarray(missing, dtype=bool)
        if missing.shape != (d.shape[0],):
            raise ValueError(f"missing mask has shape {missing.shape}, expected ({d.shape[0]},)")
    return q, d, missing


def cosine_scores(queries: np.ndarray, documents: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """Full score matrix (n_queries, n_documents) float32; NaN for missing documents."""
    q, d, missing = _check_inputs(queries, documents, missing)
    scores = q @ d.T
    if missing is not None:
        scores[:, missing] = np.nan
    return scores


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
    documents: np.ndarray,
    k: int,
    missing: np.ndarray | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    query_block: int = DEFAULT_QUERY_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n_queries, k') int64 and scores (n_queries, k') float32 of the best documents.

    ``k' = min(k, number of non-missing documents)``; rows are best first.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if block_size < 1 or query_block < 1:
        raise ValueError("block_size and query_block must be >= 1")
    q, d, missing = _check_inputs(queries, documents, missing)
    n_q, n_d = q.shape[0], d.shape[0]
    out_idx = np.full((n_q, min(k, n_d)), -1, dtype=np.int64)
    out_sc = np.full((n_q, min(k, n_d)), -np.inf, dtype=np.float32)
    for q0 in range(0, n_q, query_block):
        qb = q[q0:q0 + query_block]
        best_idx = np.empty((qb.shape[0], 0), dtype=np.int64)
        best_sc = np.empty((qb.shape[0], 0), dtype=np.float32)
        for d0 in range(0, n_d, block_size):
            sc = qb @ d[d0:d0 + block_size].T
            sc[np.isnan(sc)] = -np.inf
            if missing is not None:
                sc[:, missing[d0:d0 + block_size]] = -np.inf
            idx = np.broadcast_to(np.arange(d0, d0 + sc.shape[1], dtype=np.int64), sc.shape)
            sc = np.concatenate([best_sc, sc], axis=1)
            idx = np.concatenate([best_idx, idx], axis=1)
            best_idx, best_sc = _select(sc, idx, min(k, sc.shape[1]))
        out_idx[q0:q0 + qb.shape[0]] = best_idx
        out_sc[q0:q0 + qb.shape[0]] = best_sc
    found = np.isfinite(out_sc)
    keep = int(found.sum(axis=1).max()) if n_q else 0
    out_idx, out_sc = out_idx[:, :keep], out_sc[:, :keep]
    out_idx[~found[:, :keep]] = -1
    out_sc[~found[:, :keep]] = np.nan
    return out_idx, out_sc


def top_k(
    query: np.ndarray,
    documents: np.ndarray,
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


def hybrid(first: np.ndarray, second: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """``weight * z(first) + (1 - weight) * z(second)`` for aligned score matrices (see module doc)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"hybrid weight must be between 0 and 1, got {weight}")
    a = np.asarray(first, dtype=np.float32)
    b = np.asarray(second, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"hybrid needs aligned score matrices, got {a.shape} and {b.shape}")
    if weight == 1.0:
        return standardise_scores(a)
    if weight == 0.0:
        return standardise_scores(b)
    return (weight * standardise_scores(a) + (1.0 - weight) * standardise_scores(b)).astype(np.float32)
