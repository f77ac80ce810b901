"""The nearest-neighbour consensus captioner (Devlin et al., 2015).

For each photo, every caption of its neighbours is a candidate; the chosen
caption is the candidate with the highest mean similarity to the other
candidates (the "consensus" caption), where similarity is the cosine of the text
embedder's document embeddings. No generative model is involved.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pipeline.backends import TextEmbedder

if TYPE_CHECKING:
    from PIL import Image

RULE = "max-mean-cosine-to-other-candidates"
VERSION = 1
_SCORE_DECIMALS = 5  # scores are compared after rounding so that float noise never decides a tie


def _candidates(captions: Sequence[str]) -> list[str]:
    return [c for c in (" ".join(str(x).split()) for x in captions) if c]


def consensus_index(vectors: np.ndarray) -> int:
    """Index of the row with the highest mean cosine to the other rows (lowest index on ties)."""
    n = vectors.shape[0]
    if n <= 2:
        return 0
    sims = vectors @ vectors.T
    mean_to_others = (sims.sum(axis=1) - np.diag(sims)) / (n - 1)
    return int(np.argmax(np.round(mean_to_others, _SCORE_DECIMALS)))


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
