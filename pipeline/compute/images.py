"""``embed-images`` computed anywhere: photos (by location, or their bytes) in, image vectors out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pipeline.compute.jobs import BatchJob, process_state, run_state
from pipeline.images import PhotoSource
from pipeline.models.batch_limit import OUT_OF_MEMORY, BatchLimit
from pipeline.progress import StageProgress

if TYPE_CHECKING:
    from pipeline.backends import ImageEmbedder


@dataclass(frozen=True)
class ImagesIn:
    photos: tuple[tuple[str, PhotoSource], ...]        # (sha256, where the photo is): each content once


@dataclass
class ImagesOut:
    keys: list[str] = field(default_factory=list)       # sha256 of the photos embedded
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    errors: dict[str, str] = field(default_factory=dict)  # sha256 -> why it was not embedded


def embedder(job: BatchJob) -> "ImageEmbedder":
    """The configured image embedder, built once per process and configuration (its model stays loaded)."""
    from pipeline.embedders.registry import build_image_embedder

    return process_state(job.ref, "image-embedder", lambda: build_image_embedder(job.ref.config))


def embed_images(job: BatchJob, progress: StageProgress, embedder_: "ImageEmbedder | None" = None) -> ImagesOut:
    """Embed each photo of the job; a photo that cannot be read or decoded is an error with its reason.
    ``embedder_``: the flow's own, when the batch is computed in the flow's process."""
    inputs: ImagesIn = job.inputs
    if not inputs.photos:
        return ImagesOut()
    model = embedder_ if embedder_ is not None else embedder(job)
    limit: BatchLimit = run_state(job.ref, "model_batch", lambda: BatchLimit(job.ref.config.image_embedder.batch_size))
    by_location = {str(src): sha for sha, src in inputs.photos}
    errors: dict[str, str] = {}
    size = limit.size
    vectors, ok = model.embed_paths(
        [src for _, src in inputs.photos], limit=limit, progress=lambda n, failures: progress.advance(n, failures),
        on_error=lambda location, reason: errors.__setitem__(
            by_location[location], f"cannot embed the photo: {reason}" if reason == OUT_OF_MEMORY
            else f"cannot decode the photo: {reason}"))
    if limit.size < size:
        progress.message(f"embed-images: out of GPU memory, batch size lowered to {limit.size} for the rest of this "
                         "run", "warning")
    keys = [sha for (sha, _), good in zip(inputs.photos, ok) if good]
    return ImagesOut(keys, np.ascontiguousarray(vectors[ok]), errors)
