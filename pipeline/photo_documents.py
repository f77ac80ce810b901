"""Several documents per photo: a photo is found by the best of its captions.

Searching a whole collection, a photo has as many documents as it has captions: its human captions
(several per photo in a captioned collection) and the caption each captioner wrote for it. A query scores
every document (``pipeline.distinct.DistinctRows``: identical caption vectors scored once, so photos and
captions with the same text tie exactly on every machine), and a photo's score is the highest score of
its documents: a maximum, so it is exactly one of the document scores, never a rounded sum. The
document that gave it (the first in document order on a tie: human captions first, then the captioners
in ``captioners.enabled`` order, each in caption order) says which kind of caption matched.

Documents are ordered by photo position (photos in id order), which makes the per-photo maximum one
``np.fmax.reduceat`` over contiguous runs; a photo without any document (or whose documents have no
vector) is *missing*: NaN, never listed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pipeline.distinct import DistinctRows


@dataclass
class PhotoDocuments:
    n_photos: int
    photo: np.ndarray                 # int64 (n_docs,): each document's photo position, ascending
    rows: DistinctRows                # the documents' vectors (a document without a vector is missing)
    kinds: list[str]                  # each document's caption kind: 'human' or a captioner's name
    texts: list[str]
    # whose caption each document is when not the photo's own: an identical copy searched by its twin's
    # human captions ('' for the photo's own; empty list: every document is the photo's own)
    via: list[str] = field(default_factory=list)
    _runs: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.photo = np.asarray(self.photo, dtype=np.int64)
        if self.photo.size and np.any(np.diff(self.photo) < 0):
            raise ValueError("documents must be ordered by photo position")
        if not self.via:
            self.via = [""] * self.photo.size
        if self.rows.n != self.photo.size or len(self.kinds) != self.photo.size or len(self.texts) != self.photo.size \
                or len(self.via) != self.photo.size:
            raise ValueError("photo, rows, kinds, texts and via must describe the same documents")
        starts = np.flatnonzero(np.r_[True, self.photo[1:] != self.photo[:-1]]) if self.photo.size else \
            np.zeros(0, dtype=np.int64)
        self._runs = starts
        present = np.zeros(self.n_photos, dtype=bool)
        present[self.photo[~self.rows.missing]] = True
        self.missing = ~present

    @classmethod
    def build(cls, n_photos: int, docs: Sequence[tuple[int, str, str] | tuple[int, str, str, str]],
              key_rows: dict[str, int], matrix: np.ndarray | None, key_of, dim: int = 1) -> "PhotoDocuments":
        """Documents ``(photo position, kind, text)`` or ``(photo position, kind, text, via)`` (in document order)
        whose vectors are ``matrix[key_rows[key_of(text)]]``; a text without a row is a missing document."""
        doc, src = [], []
        for j, d in enumerate(docs):
            row = key_rows.get(key_of(d[2]))
            if row is not None:
                doc.append(j)
                src.append(row)
        rows = DistinctRows.from_rows(len(docs), doc, src, matrix, dim=dim)
        return cls(n_photos, np.array([d[0] for d in docs], dtype=np.int64), rows,
                   [d[1] for d in docs], [d[2] for d in docs], [d[3] if len(d) > 3 else "" for d in docs])

    @property
    def n_present(self) -> int:
        """Photos with at least one document that has a vector."""
        return int((~self.missing).sum())

    @property
    def dim(self) -> int:
        return self.rows.dim

    def document_scores(self, queries: np.ndarray) -> np.ndarray:
        """(n_queries, n_documents) cosine scores, NaN for documents without a vector."""
        from pipeline.search import cosine_scores

        if not self.photo.size:
            return np.zeros((len(queries), 0), dtype=np.float32)
        return cosine_scores(queries, self.rows)

    def photo_scores(self, doc_scores: np.ndarray) -> np.ndarray:
        """Per photo, the best of its documents' scores: (n_queries, n_photos), NaN where it has none."""
        doc_scores = np.asarray(doc_scores, dtype=np.float32)
        out = np.full((doc_scores.shape[0], self.n_photos), np.nan, dtype=np.float32)
        if self._runs.size:
            out[:, self.photo[self._runs]] = np.fmax.reduceat(doc_scores, self._runs, axis=1)
        return out

    def documents_of(self, position: int) -> range:
        """The documents of the photo at ``position`` (an empty range when it has none)."""
        lo = int(np.searchsorted(self.photo, position, side="left"))
        hi = int(np.searchsorted(self.photo, position, side="right"))
        return range(lo, hi)

    def best_document(self, doc_scores: np.ndarray, position: int) -> int | None:
        """The document that gave the photo its score for one query (the first on a tie); None when none did."""
        docs = self.documents_of(position)
        if not len(docs):
            return None
        scores = np.asarray(doc_scores[docs.start:docs.stop], dtype=np.float32)
        if np.isnan(scores).all():
            return None
        best = np.nanmax(scores)
        return docs.start + int(np.flatnonzero(scores == best)[0])
