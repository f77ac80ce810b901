"""Text vectors kept in the workspace store, keyed by the text's hash.

A caption or query text is embedded once per workspace and text embedder,
whoever asks for it: the embed-captions stage, the evaluation, the search, and
kNN consensus (whose candidates are reference captions that many targets share).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from pipeline.hashing import hash_text
from pipeline.keys import document_space, query_space

if TYPE_CHECKING:
    from pipeline.backends import TextEmbedder
    from pipeline.store import Store


NewVectors = list[tuple[list[str], np.ndarray]]   # (text hashes, their vectors) per embedded chunk


def embed_missing(store: "Store", space: str, texts: Sequence[str], embed: Callable[[list[str]], np.ndarray],
                  batch: int = 256) -> NewVectors:
    """Embed the distinct texts that have no vector in the space yet (nothing is written)."""
    keys = [hash_text(t) for t in texts]
    present = store.has_vectors(space, keys)
    todo = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in present))
    chunks = (todo[start:start + batch] for start in range(0, len(todo), batch))
    return [([hash_text(t) for t in chunk], embed(chunk)) for chunk in chunks]


def store_new(store: "Store", space: str, new: NewVectors) -> int:
    """Write vectors from ``embed_missing`` in one transaction (joins the caller's); returns how many."""
    if new:
        with store.transaction():
            for keys, vectors in new:
                store.put_vectors(space, keys, vectors)
    return sum(len(keys) for keys, _ in new)


def text_vectors(store: "Store", space: str, texts: Sequence[str], embed: Callable[[list[str]], np.ndarray],
                 batch: int = 256) -> tuple[np.ndarray, int]:
    """Vectors of ``texts`` in a store space keyed by ``hash_text``: stored ones are reused, the rest are
    embedded (each distinct text once) and stored. Returns (matrix in the order of ``texts``, newly embedded).

    Embedding happens before the write transaction, so the store's write lock is never held meanwhile."""
    n_new = store_new(store, space, embed_missing(store, space, texts, embed, batch))
    keys = [hash_text(t) for t in texts]
    if not keys:
        return np.zeros((0, 0), dtype=np.float32), 0
    found, mat = store.get_vectors(space, list(dict.fromkeys(keys)))
    row = {k: i for i, k in enumerate(found)}
    return mat[[row[k] for k in keys]], n_new


class StoreCachedTextEmbedder:
    """A ``TextEmbedder`` that reads and writes its vectors through the store (same key, same vectors)."""

    def __init__(self, inner: "TextEmbedder", store: "Store"):
        self.inner = inner
        self.store = store
        self.key = inner.key
        self.dim = inner.dim

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return text_vectors(self.store, document_space(self.key), list(texts), self.inner.embed_documents)[0]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return text_vectors(self.store, query_space(self.key), list(texts), self.inner.embed_queries)[0]

    def __getattr__(self, name: str) -> Any:  # settings(), prompts, ... of the wrapped embedder
        return getattr(self.inner, name)
