"""``embed-captions`` computed anywhere: caption texts in, their vectors out (each distinct text once)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.compute.jobs import BatchJob, process_state
from pipeline.hashing import hash_text
from pipeline.progress import StageProgress

CHUNK = 256      # texts per embedder call (the same chunks in every process: same vectors, bit for bit)


@dataclass(frozen=True)
class TextsIn:
    texts: tuple[str, ...]             # distinct texts the store has no vector for


@dataclass
class TextsOut:
    chunks: list[tuple[list[str], np.ndarray]] = field(default_factory=list)   # (text hashes, vectors) per chunk


def embed_texts(job: BatchJob, progress: StageProgress) -> TextsOut:
    from pipeline.text_models import build_text_embedder

    texts = list(job.inputs.texts)
    if not texts:
        return TextsOut()
    model = process_state(job.ref, "text-embedder", lambda: build_text_embedder(job.ref.config))
    out = TextsOut()
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        out.chunks.append(([hash_text(t) for t in chunk], np.asarray(model.embed_documents(chunk))))
    return out
