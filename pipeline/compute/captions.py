"""``caption:<captioner>`` computed anywhere: photos and prompts in, captions (or each photo's failure) out."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pipeline.compute.jobs import BatchJob, process_state, run_state
from pipeline.errors import StoreError, one_line
from pipeline.images import PhotoSource
from pipeline.models.batch_limit import BatchLimit
from pipeline.progress import StageProgress

if TYPE_CHECKING:
    from pipeline.backends import Captioner

# Photos are decoded for captioning at most this many pixels on the long side (above the input
# size of every supported captioner), which bounds the memory a batch of huge photos takes.
MAX_CAPTION_SIDE = 2048


@dataclass(frozen=True)
class CaptionItem:
    id: str
    photo: PhotoSource | None             # None: the captioner looks at no pixels (kNN consensus)
    prompt: str | None = None             # the prompt (vlm-neighbours); None: the captioner's own instruction
    candidates: tuple[str, ...] | None = None   # the neighbours' captions (kNN consensus)


@dataclass(frozen=True)
class CaptionsIn:
    items: tuple[CaptionItem, ...]


@dataclass(frozen=True)
class CaptionRecord:
    image_id: str
    text: str
    status: str                # ok | empty | failed
    error: str | None
    seconds: float
    attempts: int
    prompt_tokens: int = 0     # an endpoint captioner: the tokens the server read for this photo
    completion_tokens: int = 0  # ... and wrote


@dataclass(frozen=True)
class EndpointUse:
    """What a batch's requests to a model server cost (``pipeline.stages.outcome.TokenUsage``'s fields)."""
    photos: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


@dataclass
class CaptionsOut:
    records: list[CaptionRecord] = field(default_factory=list)
    model_id: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    usage: EndpointUse | None = None          # captioned through an endpoint
    unsent: int = 0                           # photos an endpoint batch did not caption (cancelled, server gone)
    stop: tuple[str, str] | None = None       # ("unavailable", why) or ("cancelled", ""): the stage stops after it


def captioner(job: BatchJob) -> "Captioner":
    """The configured captioner, built once per process and configuration, with no store."""
    from pipeline.captioners.registry import build_captioner

    return process_state(job.ref, "captioner", lambda: build_captioner(job.ref.config, job.ref.variant))


def caption_photos(job: BatchJob, progress: StageProgress, captioner_: "Captioner | None" = None,
                   cancelled: Callable[[], bool] | None = None) -> CaptionsOut:
    """Caption every item: a photo that cannot be opened, an empty or failed caption is that item's record
    with its reason; the run goes on. ``captioner_``: the flow's own (kNN consensus keeps text vectors in the
    store, so it runs only in the flow's process); ``cancelled``: the run's cancel flag, where it is known
    (an endpoint captioner checks it every 50 ms). A captioner behind an endpoint
    (``pipeline.captioners.endpoint``) records each photo's tokens, and a batch it stopped says why."""
    from pipeline.captioners.robust import caption_robust
    from pipeline.images import open_rgb

    items: tuple[CaptionItem, ...] = job.inputs.items
    endpoint = job.ref.config.captioner(job.ref.variant).uses_endpoint
    model = _StoreErrorTrap(captioner_ if captioner_ is not None else captioner(job))
    if endpoint and (down := model.unavailable):        # an earlier batch found the server gone
        from pipeline.captioners.endpoint import EndpointUnavailable

        raise EndpointUnavailable(f"{job.ref.label}: {down}")
    settings = model.settings()
    limit: BatchLimit = run_state(job.ref, "model_batch",
                                  lambda: BatchLimit(job.ref.config.captioner(job.ref.variant).batch_size))

    def load(item: CaptionItem) -> Any:
        if item.photo is None:
            return None
        try:
            return open_rgb(item.photo, max_side=MAX_CAPTION_SIDE)
        except Exception as exc:  # a bad or unreachable photo is recorded with its reason, never fatal
            return f"cannot open the photo: {one_line(exc)}"

    if any(i.photo is not None for i in items):
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            loaded = list(pool.map(load, items))
    else:
        loaded = [None] * len(items)
    records: list[CaptionRecord] = []
    for item, value in zip(items, loaded):
        if isinstance(value, str):
            records.append(CaptionRecord(item.id, "", "failed", value, 0.0, 1))
            progress.message(f"{job.ref.variant}: {item.id} failed: {value}", "warning")
            progress.advance(1, failures=1)
    good = [(item, value) for item, value in zip(items, loaded) if not isinstance(value, str)]
    if good and endpoint:
        answer = model.caption_photos([v for _, v in good], [i.prompt for i, _ in good], progress=progress,
                                      cancelled=cancelled or (lambda: False), names=[i.id for i, _ in good])
        answered = [CaptionRecord(i.id, o.text, o.status, o.error, o.seconds, o.attempts, o.prompt_tokens,
                                  o.completion_tokens) for (i, _), o in zip(good, answer.outcomes) if o is not None]
        records += answered
        p, c = sum(r.prompt_tokens for r in answered), sum(r.completion_tokens for r in answered)
        stop = (("unavailable", answer.unavailable) if answer.unavailable else
                ("cancelled", "") if answer.cancelled else None)
        return CaptionsOut(records, model.model_id, settings, EndpointUse(len(answered), answer.requests, p, c,
                                                                          model.cost(p, c)),
                           len(good) - len(answered), stop)
    if good:
        candidates = [list(i.candidates or ()) for i, _ in good] if any(i.candidates is not None for i, _ in good) \
            else None
        outcomes = caption_robust(model, [v for _, v in good], [i.prompt for i, _ in good], candidates,
                                  batch_size=limit, progress=progress, item_names=[i.id for i, _ in good])
        records += [CaptionRecord(i.id, o.text, o.status, o.error, o.seconds, o.attempts)
                    for (i, _), o in zip(good, outcomes)]
    return CaptionsOut(records, model.model_id, settings)


class _StoreErrorTrap:
    """A captioner whose store or disk errors fail the batch at once instead of becoming the photos' failures.

    ``caption_robust`` records an error of a captioner call as the failure of the items in it (after trying
    each alone); a captioner that writes to the store (kNN consensus keeps text vectors there, in the flow's
    process) can fail because the disk is full, which says nothing about the photos and fails every one of
    them. Such an error is raised as a ``StoreError`` (its cause the original), which ``caption_robust`` lets
    through at once (``WHOLE_RUN``): nothing of the batch is written, the next run computes it, and the stage's
    ``compute_here`` turns it into the store's one-line error (``DiskFullError`` naming the disk)."""

    def __init__(self, inner: "Captioner"):
        self._inner = inner

    def caption(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._inner.caption(*args, **kwargs)
        except Exception as exc:
            if not _is_store_failure(exc):
                raise       # the store's own errors (DiskFullError, StoreError) go through as they are
            raise StoreError(f"the workspace store failed: {one_line(exc)}") from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _is_store_failure(exc: BaseException) -> bool:
    """An SQLite error or a full disk, not yet the store's one-line error."""
    import sqlite3

    from pipeline.atomic import is_disk_full

    return isinstance(exc, sqlite3.Error) or is_disk_full(exc)
