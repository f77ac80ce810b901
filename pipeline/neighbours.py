"""Top-k cosine neighbours of target photos among reference-DB photos.

Targets are never neighbours of each other or of themselves because the caller
passes only reference-DB vectors as ``db``. As a second guard, when both id lists
are given, a DB entry whose id equals the target's id is never returned (callers
that pass overlapping sets stay leak-free).

Shapes: ``indices`` and ``scores`` are (n_targets, k), nearest first. When fewer
than k DB photos are available for a target, the missing slots hold index -1 and
score NaN (and ``near_duplicate`` False).

Ties: DB photos with identical vectors (the same photo twice, under two ids) get
identical scores by construction: the DB is searched as ``pipeline.distinct.DistinctRows``,
each distinct vector scored once and its score copied to every photo that has it, so
no BLAS kernel's rounding can separate them. Neighbours are ordered by score
descending, then DB index ascending; the ``neighbours`` stage passes the DB sorted by
photo id, so tied neighbours are listed by id. The ``db`` argument is a matrix or a
``DistinctRows`` built once (what the stage does, so that each batch does not group
the DB again).

Exact search multiplies blocks of targets by blocks of the DB's distinct vectors and
keeps a running top-k (k plus the most DB photos one target must skip), so memory
stays at about ``block_bytes`` (64 MB: the DB block, its unit copy and the block of
scores) whatever the collection size; the DB may be a ``RowSubset`` of the memory-mapped
snapshot, read block by block, never copied whole.
``approximate`` (a ``pipeline.vector_index.Approximate`` over the DB's distinct vectors)
takes each target's candidates from the approximate index instead, scores them exactly and
applies the same rules (ties, exclusions, duplicates); FAISS is imported only then.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pipeline.distinct import DistinctRows, row_blocks

if TYPE_CHECKING:
    from pipeline.vector_index import Approximate

BLOCK_BYTES = 64 << 20     # what one step of the exact search holds: the DB block, its unit copy, the scores


@dataclass
class NeighbourResult:
    indices: np.ndarray         # int64 (n, k): rows of db, nearest first; -1 where fewer than k exist
    scores: np.ndarray          # float32 (n, k): cosine similarity; NaN where index is -1
    near_duplicate: np.ndarray  # bool (n, k): score >= the near-duplicate threshold

    def ids(self, db_ids: Sequence[str]) -> list[list[str]]:
        """Neighbour ids per target (padding slots left out)."""
        return [[db_ids[j] for j in row if j >= 0] for row in self.indices]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): the cosine space neighbours are scored in."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


_unit_rows = unit_rows


def _as_matrix(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {arr.shape}")
    # Checked in row blocks so the check's temporary stays small at 1M+ vectors.
    rows = max(1, (1 << 22) // max(1, arr.shape[1]))
    for start in range(0, arr.shape[0], rows):
        if not np.isfinite(arr[start:start + rows]).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _excluded_pairs(
    target_ids: Sequence[str] | None, db_ids: Sequence[str] | None, n_targets: int, n_db: int
) -> tuple[np.ndarray, np.ndarray]:
    """(target rows, db rows) whose ids are equal: pairs that must never be neighbours."""
    if target_ids is None or db_ids is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if len(target_ids) != n_targets or len(db_ids) != n_db:
        raise ValueError(
            f"id lists do not match the vectors: {len(target_ids)} target ids for {n_targets} targets, "
            f"{len(db_ids)} db ids for {n_db} db vectors"
        )
    # Indexed by the (few) targets, not the DB, so memory stays small with a million DB ids.
    target_rows: dict[str, list[int]] = {}
    for i, key in enumerate(target_ids):
        target_rows.setdefault(str(key), []).append(i)
    rows: list[int] = []
    cols: list[int] = []
    for j, key in enumerate(db_ids):
        for i in target_rows.get(str(key), ()):
            rows.append(i)
            cols.append(j)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def _sort_rows(scores: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row sorted by score (descending), ties by db index (ascending)."""
    order = np.lexsort((cols, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(cols, order, axis=1)


def _block_top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns of each row, exactly as a full sort by (score desc, column asc) would choose them.
    ``sims`` is a temporary of the caller's: it is negated in place (no second block of scores)."""
    width = sims.shape[1]
    if width <= k:
        return _sort_rows(sims, np.broadcast_to(np.arange(width, dtype=np.int64), sims.shape))
    neg = np.negative(sims, out=sims)
    part = np.argpartition(neg, k - 1, axis=1)[:, :k].copy()      # the full index array is freed at once
    top = -np.take_along_axis(neg, part, axis=1)
    kth = top.min(axis=1, keepdims=True)
    # argpartition picks arbitrarily among values tied with the k-th: redo those rows with a full sort.
    crossing = np.flatnonzero((neg == -kth).sum(axis=1) > (top == kth).sum(axis=1))
    for r in crossing:
        order = np.lexsort((np.arange(width), neg[r]))[:k]
        part[r] = order
        top[r] = -neg[r, order]
    return _sort_rows(top, part.astype(np.int64))


def _most_excluded(excl_rows: np.ndarray) -> int:
    """The most DB photos any one target must skip."""
    return int(np.bincount(excl_rows).max()) if excl_rows.size else 0


def _exact(
    targets: np.ndarray, db: DistinctRows, k: int, block_size: int, db_block_size: int,
    excl_rows: np.ndarray, excl_cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    n = targets.shape[0]
    vectors = db.vectors
    g = min(k + _most_excluded(excl_rows), vectors.shape[0])   # distinct vectors that can hold the k best photos
    scores_out = np.full((n, k), np.nan, dtype=np.float32)
    cols_out = np.full((n, k), -1, dtype=np.int64)
    for t0 in range(0, n, block_size):
        t1 = min(n, t0 + block_size)
        tb = _unit_rows(targets[t0:t1])
        best_s = np.full((t1 - t0, 0), -np.inf, dtype=np.float32)
        best_c = np.zeros((t1 - t0, 0), dtype=np.int64)
        for pos, block in row_blocks(vectors, db_block_size):   # a RowSubset in file order, each block ascending
            s, c = _block_top_k(tb @ _unit_rows(block).T, g)
            merged_s = np.concatenate([best_s, s], axis=1)
            merged_c = np.concatenate([best_c, pos[c]], axis=1)
            best_s, best_c = _sort_rows(merged_s, merged_c)
            best_s, best_c = best_s[:, :g], best_c[:, :g]
        sel = (excl_rows >= t0) & (excl_rows < t1)
        cols_out[t0:t1], scores_out[t0:t1] = db.best_documents(best_c, best_s, k,
                                                               exclude=(excl_rows[sel] - t0, excl_cols[sel]))
    return scores_out, cols_out


def _approximate(
    targets: np.ndarray, db: DistinctRows, k: int, block_size: int, approx: "Approximate",
    excl_rows: np.ndarray, excl_cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.vector_index import CANDIDATES, rescore

    n = targets.shape[0]
    g = min(k + _most_excluded(excl_rows), db.vectors.shape[0])
    scores_out = np.full((n, k), np.nan, dtype=np.float32)
    cols_out = np.full((n, k), -1, dtype=np.int64)
    for t0 in range(0, n, block_size):
        t1 = min(n, t0 + block_size)
        tb = np.ascontiguousarray(_unit_rows(targets[t0:t1]), dtype=np.float32)
        rows, s = rescore(tb, db.vectors, approx.rows(tb, CANDIDATES * g), unit=True)
        sel = (excl_rows >= t0) & (excl_rows < t1)
        cols_out[t0:t1], scores_out[t0:t1] = db.best_documents(rows[:, :g], s[:, :g], k,
                                                               exclude=(excl_rows[sel] - t0, excl_cols[sel]))
    return scores_out, cols_out


def find_neighbours(
    target_vecs: Any,
    db_vecs: "np.ndarray | DistinctRows",
    k: int = 5,
    *,
    block_size: int = 4096,
    db_block_size: int | None = None,
    target_ids: Sequence[str] | None = None,
    db_ids: Sequence[str] | None = None,
    near_duplicate_threshold: float = 0.97,
    approximate: "Approximate | None" = None,
    block_bytes: int = BLOCK_BYTES,
) -> NeighbourResult:
    """The k most cosine-similar DB photos of every target (see the module docstring for the rules)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if block_size < 1 or (db_block_size is not None and db_block_size < 1):
        raise ValueError("block_size and db_block_size must be >= 1")
    targets = _as_matrix("target vectors", target_vecs)
    db = db_vecs if isinstance(db_vecs, DistinctRows) else DistinctRows.of(_as_matrix("db vectors", db_vecs))
    # per DB row of a block: its vector and unit copy (8 * dim bytes) and, per target of the block, its score,
    # argpartition's index and a comparison (13 bytes)
    db_block = db_block_size or max(16, block_bytes // (13 * min(block_size, max(1, len(targets)))
                                                        + 8 * max(1, db.dim)))
    if targets.shape[1] != db.dim and targets.shape[0] and db.n:
        raise ValueError(f"target vectors have dim {targets.shape[1]} but db vectors have dim {db.dim}")
    excl_rows, excl_cols = _excluded_pairs(target_ids, db_ids, targets.shape[0], db.n)
    n = targets.shape[0]
    if n == 0 or db.n_present == 0:
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        cols = np.full((n, k), -1, dtype=np.int64)
    elif approximate is None:
        scores, cols = _exact(targets, db, k, block_size, db_block, excl_rows, excl_cols)
    else:
        scores, cols = _approximate(targets, db, k, block_size, approximate, excl_rows, excl_cols)
    missing = ~np.isfinite(scores)
    cols[missing] = -1
    scores[missing] = np.nan
    with np.errstate(invalid="ignore"):
        near = np.nan_to_num(scores, nan=-np.inf) >= near_duplicate_threshold
    return NeighbourResult(indices=cols, scores=scores, near_duplicate=near)
