"""The nearest-neighbour consensus captioner (Devlin et al., 2015).

For each photo, every caption of its neighbours is a candidate; the chosen
caption is the candidate with the highest mean similarity to the other
candidates (the "consensus" caption), where similarity is the cosine of the text
embedder's document embeddings. No generative model is involved.

The same choice on every machine: candidates with identical vectors (the same caption text) are
scored once, as ``pipeline.distinct`` does for search, so they tie exactly whatever the BLAS
kernel; similarities are computed in float64 from the float32 vectors (each product is exact, so
kernels differ only in the last bits of a float64 sum), and the highest score wins, the earliest
candidate (nearest neighbour first, then caption order) on an exact tie. No score is rounded: a
score on a rounding boundary could round either way depending on the kernel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pipeline.backends import TextEmbedder

if TYPE_CHECKING:
    from PIL import Image

RULE = "max-mean-cosine-to-other-candidates"
VERSION = 2   # 2: identical candidates scored once, no rounding, exact ties to the earliest candidate


def _candidates(captions: Sequence[str]) -> list[str]:
    return [c for c in (" ".join(str(x).split()) for x in captions) if c]


def consensus_index(vectors: np.ndarray) -> int:
    """Index of the row with the highest mean cosine to the other rows (the lowest index on an exact tie).

    Rows with identical vectors are one distinct row, scored once: its mean similarity to the others
    counts each copy of every other row (repeats are agreement) and the copies of itself but one."""
    from pipeline.distinct import DistinctRows

    n = vectors.shape[0]
    if n <= 2:
        return 0
    docs = DistinctRows.of(np.asarray(vectors, dtype=np.float32))
    if docs.n_present < n:
        raise ValueError("candidate caption vectors must be finite")
    unique = docs.vectors.astype(np.float64)
    sims = unique @ unique.T
    counts = docs.counts.astype(np.float64)
    mean_to_others = ((sims * counts[None, :]).sum(axis=1) - np.diag(sims)) / (n - 1)
    best = int(np.flatnonzero(mean_to_others == mean_to_others.max())[0])   # distinct rows: first candidate order
    return int(docs.members[docs.starts[best]])


class KnnConsensusCaptioner:
    """Picks the consensus caption among the neighbours' captions (``needs_prompts`` False)."""

    needs_prompts = False

    def __init__(self, text_embedder: TextEmbedder, *, name: str = "knn-consensus"):
        self.text_embedder = text_embedder
        self.name = name
        self.model_id = text_embedder.key

    def settings(self) -> dict[str, Any]:
        return {"rule": RULE, "text_embedder": self.text_embedder.key, "version": VERSION}

    def caption(
        self,
        images: Sequence["Image.Image"],
        prompts: Sequence[str | None],
        neighbour_captions: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        """One caption per image: the consensus of that image's neighbours' captions ("" when it has none).

        ``neighbour_captions[i]`` holds all captions of image i's neighbours, nearest first;
        repeated captions count as agreement, and ties go to the earlier (nearer) caption.
        All candidates of the batch are embedded in one call. The images are not looked at.
        """
        if neighbour_captions is None:
            raise ValueError(f"{self.name} needs the neighbours' captions of every image; none were given")
        if len(neighbour_captions) != len(images):
            raise ValueError(
                f"{self.name}: {len(neighbour_captions)} neighbour caption lists for {len(images)} images"
            )
        per_image = [_candidates(caps) for caps in neighbour_captions]
        unique = sorted({c for caps in per_image for c in caps if len(caps) > 2})
        row = {c: i for i, c in enumerate(unique)}
        vectors = (
            np.asarray(self.text_embedder.embed_documents(unique), dtype=np.float32)
            if unique else np.zeros((0, 0), dtype=np.float32)
        )
        out = []
        for caps in per_image:
            if not caps:
                out.append("")
            elif len(caps) <= 2:
                out.append(caps[0])
            else:
                out.append(caps[consensus_index(vectors[[row[c] for c in caps]])])
        return out
