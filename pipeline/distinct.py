"""Identical vectors, one score: documents grouped by the bytes of their vectors.

The same dot product is not reproducible across its place in a matrix product: BLAS kernels block
rows, use FMA and handle tails differently, and the kernel depends on the CPU (numpy's OpenBLAS and
torch alike). Two photos whose captions are the same text would then tie on one machine and not on
another, and ranks, Recall@K and MedR would depend on the CPU. So every ranking in capsearch (search,
evaluation, neighbours) scores each *distinct* document vector once and gives that score to every
document that has it: identical vectors get identical scores by construction, whatever the rounding,
and the tie rule (``docs/architecture.md``, "Ties") decides the rest.

``DistinctRows`` holds n documents as ``vectors`` (the distinct rows, ordered by the first document that
has each) and ``owner`` (document i is ``vectors[owner[i]]``; -1 for a missing document). Rows are the
same when their bytes are: a 64-bit hash of each row groups candidates and a byte comparison confirms
every group, so a hash collision never merges different vectors. A row with NaN or infinity is missing.

Because distinct rows are ordered by their first document, "score descending, distinct row ascending"
orders the groups as "score descending, first document ascending". ``best_documents`` turns the best
distinct rows of each query into its best documents (score descending, document index ascending), taking
from each group only the first documents that can matter, so a top-k never expands whole groups.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

_BLOCK_BYTES = 16 << 20           # vectors read at a time when grouping or checking (bounds the temporary)
_HASH_SEED = 0x5EED_CAB5


class RowSubset:
    """Rows ``index`` of ``matrix`` (usually a memory-mapped snapshot) without copying them: what a
    ``DistinctRows`` holds when its vectors are a subset of a snapshot's rows, so that a million vectors are
    not copied. Read it in blocks: ``rows[a:b]`` and ``rows[int array]`` return float32 arrays. Rows of a
    ``np.memmap`` are read from its file with ``pread`` (``FileRows``): the page cache holds the file, the
    process only the block it asked for, so reading a whole DB block by block costs its memory once in the
    machine's page cache and a block in the process."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, matrix: np.ndarray, index: np.ndarray, reader: "FileRows | None" = None):
        self.matrix = matrix
        self.index = np.asarray(index, dtype=np.int64)
        self.shape = (int(self.index.size), int(matrix.shape[1]))
        self.reader = reader if reader is not None else FileRows.of(matrix)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        rows = self.index[key] if isinstance(key, slice) else self.index[np.asarray(key)]
        if self.reader is not None:
            return self.reader.read(rows)
        return np.asarray(self.matrix[rows], dtype=np.float32)

    def subset(self, rows: np.ndarray) -> "RowSubset":
        return RowSubset(self.matrix, self.index[np.asarray(rows, dtype=np.int64)], self.reader)

    def file_order(self) -> np.ndarray:
        """Positions ordered by their row in the file (computed once)."""
        if getattr(self, "_order", None) is None:
            self._order = np.argsort(self.index, kind="stable")
        return self._order


class FileRows:
    """Rows of a memory-mapped ``.npy`` read with ``os.preadv`` through a descriptor of its own (which keeps
    the file readable even if a writer removes it meanwhile), consecutive rows in one call."""

    def __init__(self, path: str, offset: int, dim: int, rows: int):
        self.fd = os.open(path, os.O_RDONLY)
        self.offset, self.dim, self.rows = offset, dim, rows
        self.row_bytes = 4 * dim

    @classmethod
    def of(cls, matrix) -> "FileRows | None":
        if not isinstance(matrix, np.memmap) or not getattr(matrix, "filename", None) or matrix.ndim != 2 \
                or matrix.dtype != np.dtype("<f4") or not matrix.flags.c_contiguous:
            return None
        try:
            return cls(str(matrix.filename), int(matrix.offset), int(matrix.shape[1]), int(matrix.shape[0]))
        except OSError:
            return None

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).ravel()
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        if not rows.size:
            return out
        if rows.min() < 0 or rows.max() >= self.rows:
            raise IndexError(f"row out of range 0..{self.rows - 1}")
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        staged = out if np.array_equal(order, np.arange(rows.size)) else np.empty_like(out)
        cut = np.flatnonzero(np.diff(ordered) != 1) + 1
        for a, b in zip(np.r_[0, cut], np.r_[cut, ordered.size]):
            want = (b - a) * self.row_bytes
            got = os.preadv(self.fd, [memoryview(staged[a:b]).cast("B")], self.offset + int(ordered[a]) * self.row_bytes)
            if got != want:
                raise OSError(f"short read of a snapshot: {got} of {want} bytes")
        if staged is not out:
            out[order] = staged
        return out

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except (OSError, AttributeError):
            pass


def block_rows(dim: int, budget: int = _BLOCK_BYTES) -> int:
    """How many float32 vectors of dimension ``dim`` fit in ``budget`` bytes (at least 1)."""
    return max(1, budget // max(1, 4 * dim))


def row_blocks(rows: "np.ndarray | RowSubset", block: int | None = None):
    """``(positions, float32 block)`` over every row, ``block`` rows at a time (default: 16 MB of them).
    A ``RowSubset`` is read in the order of its file (each block's positions ascending), so that a block is a
    few long reads, not one per row; an array, in order."""
    block = block or block_rows(rows.shape[1])
    n = rows.shape[0]
    if isinstance(rows, RowSubset):
        order = rows.file_order()
        for start in range(0, n, block):
            pos = np.sort(order[start:start + block])
            yield pos, rows[pos]
        return
    for start in range(0, n, block):
        yield np.arange(start, min(n, start + block), dtype=np.int64), \
            np.ascontiguousarray(rows[start:start + block], dtype=np.float32)


def _words(matrix: np.ndarray) -> np.ndarray:
    """The rows' bytes as unsigned integers (a view): 64-bit words when the row length allows."""
    matrix = np.ascontiguousarray(matrix)
    row_bytes = matrix.shape[1] * matrix.itemsize
    dtype = np.uint64 if row_bytes % 8 == 0 else np.uint32
    return matrix.view(dtype).reshape(matrix.shape[0], row_bytes // np.dtype(dtype).itemsize)


def _row_hashes(words: np.ndarray) -> np.ndarray:
    """A 64-bit hash of every row: the sum of its words times per-column random odd constants, mod 2^64
    (an integer product: exact, whatever the CPU; rows it cannot tell apart are told apart by their bytes)."""
    n, width = words.shape
    consts = np.random.default_rng(_HASH_SEED).integers(1, 2**63, size=width, dtype=np.uint64) | np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    step = block_rows(width * 2)
    for start in range(0, n, step):
        out[start:start + step] = words[start:start + step].astype(np.uint64, copy=False) @ consts
    return out


def _gather_words(matrix: "np.ndarray | RowSubset", rows: np.ndarray) -> np.ndarray:
    return _words(np.ascontiguousarray(matrix[rows], dtype=np.float32))


def _first_equal_row(matrix: "np.ndarray | RowSubset") -> np.ndarray:
    """For every row, the index of the first row with the same bytes (read in blocks: ``matrix`` may be a
    memory-mapped snapshot or a ``RowSubset`` of one)."""
    n = matrix.shape[0]
    if n == 0 or matrix.shape[1] == 0:
        return np.zeros(n, dtype=np.int64)
    hashes = np.empty(n, dtype=np.uint64)
    for pos, block in row_blocks(matrix):
        hashes[pos] = _row_hashes(_words(block))
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    rep = first[inverse.ravel()].astype(np.int64)
    dup = np.flatnonzero(rep != np.arange(n))
    same = np.ones(dup.size, dtype=bool)
    step = block_rows(matrix.shape[1])
    for start in range(0, dup.size, step):
        d = dup[start:start + step]
        same[start:start + d.size] = (_gather_words(matrix, d) == _gather_words(matrix, rep[d])).all(axis=1)
    if not same.all():   # a hash collision: split the groups involved by their bytes
        involved = np.flatnonzero(np.isin(rep, rep[dup[~same]]))
        rows = _gather_words(matrix, involved)
        keys = rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize))).ravel()
        _, sub_first, sub_inverse = np.unique(keys, return_index=True, return_inverse=True)
        rep[involved] = involved[sub_first[sub_inverse.ravel()]]
    return rep


def _finite_rows(matrix: "np.ndarray | RowSubset") -> np.ndarray:
    ok = np.empty(matrix.shape[0], dtype=bool)
    for pos, block in row_blocks(matrix):
        ok[pos] = np.isfinite(block).all(axis=1)
    return ok


class DistinctRows:
    """n documents as their distinct vectors (see the module docstring)."""

    def __init__(self, vectors: np.ndarray, owner: np.ndarray):
        self.vectors = vectors
        self.owner = owner
        self._source = np.maximum(owner, 0)              # the row each document copies its score from
        self._absent = np.flatnonzero(owner < 0)
        self._identity = vectors.shape[0] == owner.shape[0] and not self._absent.size   # one row per document
        present = np.flatnonzero(owner >= 0)
        self.counts = np.bincount(owner[present], minlength=vectors.shape[0])
        # documents grouped by distinct row, ascending within a group
        self.members = present[np.argsort(owner[present], kind="stable")]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    # -- building ------------------------------------------------------------------------------------
    @classmethod
    def of(cls, matrix: np.ndarray, missing: np.ndarray | None = None) -> "DistinctRows":
        """Documents 0..n-1 are the rows of ``matrix``; ``missing[i]`` (or a non-finite row) leaves i out."""
        m = np.ascontiguousarray(matrix, dtype=np.float32)
        if m.ndim != 2:
            raise ValueError(f"documents must be a 2-D array (n, dim), got shape {m.shape}")
        present = _finite_rows(m)
        if missing is not None:
            missing = np.asarray(missing, dtype=bool)
            if missing.shape != (m.shape[0],):
                raise ValueError(f"missing mask has shape {missing.shape}, expected ({m.shape[0]},)")
            present &= ~missing
        doc = np.flatnonzero(present)
        return cls._build(m.shape[0], doc, doc, m, m.shape[1])

    @classmethod
    def from_rows(cls, n: int, doc: Sequence[int] | np.ndarray, src: Sequence[int] | np.ndarray,
                  matrix: np.ndarray | None, dim: int = 1) -> "DistinctRows":
        """Documents 0..n-1 where document ``doc[j]`` is ``matrix[src[j]]``; the others are missing.

        Only the rows that ``src`` names are read, in file order (``matrix`` may be memory-mapped); rows that
        many documents share (one caption text, one photo) are read and hashed once.
        """
        doc = np.asarray(doc, dtype=np.int64)
        src = np.asarray(src, dtype=np.int64)
        if doc.shape != src.shape:
            raise ValueError(f"{doc.size} documents but {src.size} source rows")
        if matrix is None or doc.size == 0:
            d = matrix.shape[1] if matrix is not None and matrix.ndim == 2 and matrix.shape[1] else dim
            return cls._build(n, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, d), np.float32), d)
        used, src_of_doc = np.unique(src, return_inverse=True)
        if isinstance(matrix, (np.memmap, RowSubset)):
            # a snapshot: keep reading it through the page cache rather than copying a million vectors
            whole = used.size == matrix.shape[0] and not isinstance(matrix, RowSubset)
            rows = matrix if whole else (matrix.subset(used) if isinstance(matrix, RowSubset)
                                         else RowSubset(matrix, used))
        else:
            rows = np.ascontiguousarray(matrix[used], dtype=np.float32)
        ok = _finite_rows(rows)[src_of_doc.ravel()]
        return cls._build(n, doc[ok], src_of_doc.ravel()[ok], rows, rows.shape[1])

    @classmethod
    def _build(cls, n: int, doc: np.ndarray, src: np.ndarray, rows: "np.ndarray | RowSubset",
               dim: int) -> "DistinctRows":
        """Document ``doc[j]`` is ``rows[src[j]]``: group ``rows`` by bytes, order groups by first document."""
        owner = np.full(n, -1, dtype=np.int64)
        if doc.size == 0:
            return cls(np.zeros((0, dim), dtype=np.float32), owner)
        rep = _first_equal_row(rows)
        reps, group_of_row = np.unique(rep, return_inverse=True)
        group = group_of_row.ravel()[src]                        # group of each document
        first_doc = np.full(reps.size, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first_doc, group, doc)
        used = np.flatnonzero(first_doc < np.iinfo(np.int64).max)
        order = used[np.argsort(first_doc[used], kind="stable")]
        relabel = np.full(reps.size, -1, dtype=np.int64)
        relabel[order] = np.arange(order.size)
        owner[doc] = relabel[group]
        keep = reps[order]
        identity = keep.size == rows.shape[0] and np.array_equal(keep, np.arange(keep.size))
        if identity:
            return cls(rows, owner)
        if isinstance(rows, RowSubset):
            return cls(rows.subset(keep), owner)
        if isinstance(rows, np.memmap):
            return cls(RowSubset(rows, keep), owner)
        return cls(np.ascontiguousarray(rows[keep]), owner)

    def take(self, index: Sequence[int] | np.ndarray) -> "DistinctRows":
        """The documents ``index`` (in that order) as a new set: e.g. the same vectors given to other photos."""
        owner = self.owner[np.asarray(index, dtype=np.int64)]
        doc = np.flatnonzero(owner >= 0)
        return DistinctRows._build(owner.size, doc, owner[doc], self.vectors, self.dim)

    # -- reading -------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.owner.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def missing(self) -> np.ndarray:
        return self.owner < 0

    @property
    def n_present(self) -> int:
        return int(self.members.size)

    def score(self, queries: np.ndarray) -> np.ndarray:
        """(n_queries, n_distinct) dot products of the queries with every distinct vector; vectors held as a
        ``RowSubset`` of a snapshot are read 16 MB at a time."""
        if not isinstance(self.vectors, RowSubset):
            return queries @ self.vectors.T
        out = np.empty((queries.shape[0], self.vectors.shape[0]), dtype=np.float32)
        for pos, block in row_blocks(self.vectors):
            out[:, pos] = queries @ block.T
        return out

    def expand(self, scores: np.ndarray) -> np.ndarray:
        """Scores per distinct row (n_queries, n_distinct) -> per document (n_queries, n), NaN for missing ones.
        Every document gets a copy of its row's score, so documents with the same vector tie exactly."""
        scores = np.asarray(scores)
        if not scores.shape[1]:
            return np.full((scores.shape[0], self.n), np.nan, dtype=scores.dtype)
        if self._identity:                               # every vector distinct, none missing: nothing to copy
            return scores
        out = scores[:, self._source]
        if self._absent.size:
            out[:, self._absent] = np.nan
        return out

    def best_documents(self, groups: np.ndarray, scores: np.ndarray, k: int,
                       exclude: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best documents of each query, from its best distinct rows.

        ``groups`` (n_queries, g) are distinct rows (-1 for none) with their ``scores``; for the result to be
        exact they must be each query's g best rows by (score descending, row ascending), with
        g >= min(k + e, n_distinct) where e is the most documents ``exclude`` (query rows, document indices)
        takes from one query. Returns documents (n_queries, k) int64 and scores float32, best first, ties by
        the lower document index; -1 and NaN where fewer than k exist.
        """
        groups = np.asarray(groups, dtype=np.int64)
        n_q, g = groups.shape
        excl_q, excl_d = exclude if exclude is not None else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        limit = k + (int(np.bincount(excl_q).max()) if excl_q.size else 0)
        valid = groups >= 0
        safe = np.where(valid, groups, 0)
        take = np.where(valid, np.minimum(self.counts[safe], limit), 0).ravel()
        slot = np.repeat(np.arange(n_q * g), take)
        within = np.arange(slot.size) - np.repeat(np.cumsum(take) - take, take)
        docs = self.members[self.starts[safe.ravel()[slot]] + within]
        sc = np.asarray(scores, dtype=np.float32).ravel()[slot]
        query = slot // max(g, 1)
        if excl_q.size:
            keys = query * self.n + docs
            keep = ~np.isin(keys, np.asarray(excl_q, np.int64) * self.n + np.asarray(excl_d, np.int64))
            docs, sc, query = docs[keep], sc[keep], query[keep]
        order = np.lexsort((docs, -sc, query))
        docs, sc, query = docs[order], sc[order], query[order]
        pos = np.arange(query.size) - np.searchsorted(query, query)
        keep = pos < k
        out_idx = np.full((n_q, k), -1, dtype=np.int64)
        out_sc = np.full((n_q, k), np.nan, dtype=np.float32)
        out_idx[query[keep], pos[keep]] = docs[keep]
        out_sc[query[keep], pos[keep]] = sc[keep]
        return out_idx, out_sc
