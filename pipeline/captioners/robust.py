"""Caption many images without letting one bad item or a full GPU stop the run.

``caption_robust`` runs a captioner in batches. Out of GPU memory halves the batch
size (down to 1) and goes on at that size (for the rest of the stage run when the
stage passes its ``BatchLimit``); an item that raises or comes back empty is retried
once on its own; what still fails is recorded with its reason. Good captions of a
batch are never lost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

from pipeline.errors import ConfigError, DiskFullError, ModelLoadError, StoreError, one_line
from pipeline.models.batch_limit import OUT_OF_MEMORY, BatchLimit, run_chunks
from pipeline.models.device import free_accelerator_memory, is_oom

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.backends import Captioner
    from pipeline.progress import StageProgress

__all__ = ["EMPTY", "OUT_OF_MEMORY", "CaptionOutcome", "caption_robust"]

EMPTY = "the captioner returned an empty caption"
# Failures that say nothing about the photos and would fail every one of them the same way (the model, the
# configuration, the workspace store, a full disk): raised at once, never recorded as the photos' failures.
WHOLE_RUN = (ModelLoadError, ConfigError, StoreError, DiskFullError)


@dataclass(frozen=True)
class CaptionOutcome:
    text: str
    status: Literal["ok", "empty", "failed"]
    error: str | None
    seconds: float      # this item's share of its batch time, plus its own retry (an endpoint: its requests' time)
    attempts: int       # 1, or 2 when it was retried alone (an endpoint: the requests sent)
    prompt_tokens: int = 0       # an endpoint's count of the tokens it read (image and text) for this photo
    completion_tokens: int = 0   # ... and wrote


def caption_robust(
    captioner: "Captioner",
    images: Sequence["Image.Image"],
    prompts: Sequence[str | None],
    neighbour_captions: Sequence[Sequence[str]] | None = None,
    *,
    batch_size: int | BatchLimit,
    progress: "StageProgress | None" = None,
    item_names: Sequence[str] | None = None,
) -> list[CaptionOutcome]:
    """One outcome per image, in order.

    Raises only for failures that concern the whole run (``WHOLE_RUN``: the model cannot be loaded, bad config,
    the store or the disk failed), at the first one: no item is tried again for them.
    ``batch_size`` is the configured size, or the stage run's ``BatchLimit`` (which keeps a size
    lowered by out of memory for later calls). ``progress`` is advanced per batch; ``item_names``
    (e.g. image ids) name items in its messages.
    """
    n = len(images)
    if len(prompts) != n or (neighbour_captions is not None and len(neighbour_captions) != n):
        raise ValueError(f"caption_robust: {n} images but {len(prompts)} prompts"
                         + ("" if neighbour_captions is None else f" and {len(neighbour_captions)} neighbour lists"))
    if isinstance(batch_size, int) and batch_size < 1:
        raise ValueError(f"caption_robust: batch_size must be at least 1 (got {batch_size})")
    shared = isinstance(batch_size, BatchLimit)
    limit = batch_size if isinstance(batch_size, BatchLimit) else BatchLimit(batch_size)

    def call(indices: list[int]) -> list[str]:
        neighbours = None if neighbour_captions is None else [neighbour_captions[i] for i in indices]
        texts = captioner.caption([images[i] for i in indices], [prompts[i] for i in indices], neighbours)
        if len(texts) != len(indices):
            raise RuntimeError(f"{captioner.name} returned {len(texts)} captions for {len(indices)} images")
        return [t if isinstance(t, str) else "" for t in texts]

    def name(i: int) -> str:
        return item_names[i] if item_names is not None else f"item {i}"

    def alone(i: int, share: float) -> CaptionOutcome:
        """Second attempt for one item."""
        started = time.monotonic()
        try:
            text = call([i])[0].strip()
        except WHOLE_RUN:
            raise
        except Exception as exc:
            seconds = share + time.monotonic() - started
            if is_oom(exc):
                free_accelerator_memory()
                return CaptionOutcome("", "failed", OUT_OF_MEMORY, seconds, 2)
            return CaptionOutcome("", "failed", one_line(exc), seconds, 2)
        seconds = share + time.monotonic() - started
        if not text:
            return CaptionOutcome("", "empty", EMPTY, seconds, 2)
        return CaptionOutcome(text, "ok", None, seconds, 2)

    def report(indices: list[int], batch: list[CaptionOutcome]) -> None:
        if progress is None:
            return
        bad = [(i, o) for i, o in zip(indices, batch) if o.status != "ok"]
        for i, o in bad:
            progress.message(f"{captioner.name}: {name(i)} {o.status}: {o.error}", level="warning")
        progress.advance(len(indices), failures=len(bad))

    def attempt(start: int, stop: int) -> list[str] | Exception:
        """The batch's texts, or what it raised (out of memory goes to ``run_chunks``)."""
        try:
            return call(list(range(start, stop)))
        except WHOLE_RUN:
            raise
        except Exception as exc:
            if is_oom(exc):
                raise
            return exc

    def lowered(size: int) -> None:
        if progress is not None:
            kept = " for the rest of this run" if shared else ""
            progress.message(f"{captioner.name}: out of GPU memory, batch size lowered to {size}{kept}",
                             level="warning")

    outcomes: list[CaptionOutcome] = []
    for chunk in run_chunks(n, limit, attempt, lowered):
        indices = list(range(chunk.start, chunk.stop))
        if chunk.result is None:  # one image that does not fit on its own
            batch = [CaptionOutcome("", "failed", OUT_OF_MEMORY, chunk.seconds, 1)]
        else:
            # a batch that raised: every item gets its own try
            texts = [""] * len(indices) if isinstance(chunk.result, Exception) else chunk.result
            share = chunk.seconds / len(indices)
            batch = [CaptionOutcome(text.strip(), "ok", None, share, 1) if text.strip() else alone(i, share)
                     for i, text in zip(indices, texts)]
        report(indices, batch)
        outcomes.extend(batch)
    return outcomes
