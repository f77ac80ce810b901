"""Caption many images without letting one bad item or a full GPU stop the run.

``caption_robust`` runs a captioner in batches. Out of GPU memory halves the batch
size (down to 1) and goes on; an item that raises or comes back empty is retried
once on its own; what still fails is recorded with its reason. Good captions of a
batch are never lost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

from pipeline.errors import ConfigError, ModelLoadError
from pipeline.models.device import free_accelerator_memory, is_oom

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.backends import Captioner
    from pipeline.progress import StageProgress

OUT_OF_MEMORY = "out of GPU memory"
EMPTY = "the captioner returned an empty caption"


@dataclass(frozen=True)
class CaptionOutcome:
    text: str
    status: Literal["ok", "empty", "failed"]
    error: str | None
    seconds: float      # this item's share of its batch time, plus its own retry
    attempts: int       # 1, or 2 when it was retried alone


def caption_robust(
    captioner: "Captioner",
    images: Sequence["Image.Image"],
    prompts: Sequence[str | None],
    neighbour_captions: Sequence[Sequence[str]] | None = None,
    *,
    batch_size: int,
    progress: "StageProgress | None" = None,
    item_names: Sequence[str] | None = None,
) -> list[CaptionOutcome]:
    """One outcome per image, in order.

    Raises only for failures that concern the whole run (the model cannot be loaded, bad config).
    ``progress`` is advanced per batch; ``item_names`` (e.g. image ids) name items in its messages.
    """
    n = len(images)
    if len(prompts) != n or (neighbour_captions is not None and len(neighbour_captions) != n):
        raise ValueError(f"caption_robust: {n} images but {len(prompts)} prompts"
                         + ("" if neighbour_captions is None else f" and {len(neighbour_captions)} neighbour lists"))
    if batch_size < 1:
        raise ValueError(f"caption_robust: batch_size must be at least 1 (got {batch_size})")

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
        except (ModelLoadError, ConfigError):
            raise
        except Exception as exc:
            seconds = share + time.monotonic() - started
            if is_oom(exc):
                free_accelerator_memory()
                return CaptionOutcome("", "failed", OUT_OF_MEMORY, seconds, 2)
            return CaptionOutcome("", "failed", _reason(exc), seconds, 2)
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

    outcomes: list[CaptionOutcome] = []
    size = batch_size
    while len(outcomes) < n:
        indices = list(range(len(outcomes), min(len(outcomes) + size, n)))
        started = time.monotonic()
        try:
            texts = call(indices)
        except (ModelLoadError, ConfigError):
            raise
        except Exception as exc:
            if is_oom(exc):
                free_accelerator_memory()
                if size > 1:
                    size = max(1, size // 2)
                    if progress is not None:
                        progress.message(f"{captioner.name}: out of GPU memory, batch size lowered to {size}",
                                         level="warning")
                    continue
                batch = [CaptionOutcome("", "failed", OUT_OF_MEMORY, time.monotonic() - started, 1)]
                report(indices, batch)
                outcomes.extend(batch)
                continue
            texts = [""] * len(indices)  # every item of the failed batch gets its own try
        share = (time.monotonic() - started) / len(indices)
        batch = [CaptionOutcome(text.strip(), "ok", None, share, 1) if text.strip() else alone(i, share)
                 for i, text in zip(indices, texts)]
        report(indices, batch)
        outcomes.extend(batch)
    return outcomes


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
