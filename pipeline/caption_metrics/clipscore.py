"""CLIPScore and RefCLIPScore (Hessel et al., 2021, "CLIPScore: A Reference-free Evaluation Metric for
Image Captioning").

* CLIPScore(c, v) = 2.5 * max(cos(E_text("A photo depicts " + c), E_image(v)), 0)
* RefCLIPScore(c, R, v) = harmonic mean of CLIPScore(c, v) and max(max_r cos(E_text(c), E_text(r)), 0),
  references embedded with the same prefix (as the authors' code does).

The image side is the vector the embed-images stage stored for the photo (``image/<embedder key>``, the
configured open_clip model), the text side that model's text tower; caption vectors are kept in the store
(``clip-text/<embedder key>``, keyed by the hash of the prefixed text), so a text is embedded once.
The classical image embedder has no text side: both scores are then not applicable.

Cosines are computed from the stored float32 vectors with exactly rounded sums (``math.fsum``), so the same
caption of the same photo gets the same score on every machine and BLAS kernel.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from pipeline.keys import clip_text_space
from pipeline.text_vectors import text_vectors

if TYPE_CHECKING:
    from pipeline.store import Store

PREFIX = "A photo depicts "
WEIGHT = 2.5


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors with exactly rounded sums (independent of summation order)."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dot = math.fsum((a64 * b64).tolist())        # float32 x float32 products are exact in float64
    na = math.sqrt(math.fsum((a64 * a64).tolist()))
    nb = math.sqrt(math.fsum((b64 * b64).tolist()))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return dot / (na * nb)


def clip_score(image_vec: np.ndarray, caption_vec: np.ndarray) -> float:
    return WEIGHT * max(cosine(image_vec, caption_vec), 0.0)


def ref_clip_score(clip_s: float, caption_vec: np.ndarray, reference_vecs: Sequence[np.ndarray]) -> float:
    text_side = max([cosine(caption_vec, r) for r in reference_vecs] + [0.0])
    if clip_s + text_side == 0.0:
        return 0.0
    return 2.0 * clip_s * text_side / (clip_s + text_side)


def caption_vectors(store: "Store", embedder, texts: Sequence[str]) -> tuple[np.ndarray, int]:
    """Text-tower vectors of ``PREFIX + text`` (stored in ``clip-text/<key>``); returns (matrix, newly embedded)."""
    prefixed = [PREFIX + t for t in texts]
    if not prefixed:
        return np.zeros((0, embedder.dim), dtype=np.float32), 0
    return text_vectors(store, clip_text_space(embedder.key), prefixed, embedder.embed_texts)
