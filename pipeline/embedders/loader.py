"""Batched decoding of image files, shared by every image embedder.

Files are opened with ``pipeline.images.open_rgb`` (EXIF orientation, alpha
flattened), decoded and turned into model input by a per-image ``transform``, by
``num_workers`` decoding threads that run up to ``PREFETCH_BATCHES`` batches ahead
of the model (in the calling thread when ``num_workers`` is 0). A file that cannot
be read is reported through ``on_error(path, reason)`` and marked not ok; the run
goes on. The model sees the decoded images in chunks of the ``BatchLimit`` it is
given: out of GPU memory halves it, and the stage keeps it halved for the rest of
its run (``pipeline.models.batch_limit``).

Threads, not processes: flows embed inside a task thread of a process that runs many
threads (Prefect's engine and event loops, rich's refresh thread, the other batch
tasks). A process forked from there starts with every lock as it was at that
instant, held ones included, and torch DataLoader workers forked that way hung
waiting for an import lock that another thread of the parent held (the parent then
waits for them forever). Pillow releases the GIL while it decodes and resizes, and
torch while it computes, so threads decode while the model runs;
``bench/image_embedding.py`` compares them with DataLoader workers started with
``forkserver`` and ``spawn`` (docs/benchmarks.md, docs/architecture.md).
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from pipeline.errors import one_line
from pipeline.images import PhotoSource, open_rgb
from pipeline.models.batch_limit import OUT_OF_MEMORY, BatchLimit, run_chunks

log = logging.getLogger(__name__)

ErrorCallback = Callable[[str, str], None]
ProgressFn = Callable[[int, int], None]  # (items done in this batch, failures in this batch)
Transform = Callable[[Any], Any]          # PIL RGB image -> model input (array or tensor)

PREFETCH_BATCHES = 2  # decoded batches the decoding threads may hold ready beyond the one being embedded


class ImageFileDataset:
    """Item i is ``(i, transform(image) or None, error or None)``; reading an item never raises."""

    def __init__(self, paths: Sequence[str | Path | PhotoSource], transform: Transform):
        self.paths = [_photo(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        try:
            return i, self.transform(open_rgb(self.paths[i])), None
        except Exception as exc:  # a bad file is reported, never fatal
            return i, None, one_line(exc)


def _photo(p: "str | Path | PhotoSource") -> "str | PhotoSource":
    return p if isinstance(p, PhotoSource) else str(p)


@dataclass
class DecodedBatch:
    indices: list[int]          # positions (in the input path list) of the items decoded
    payloads: list[Any]         # transform outputs of those items, same order
    failed: list[tuple[int, str]]  # (position, reason) of items that could not be read


def collate_decoded(items: list[tuple[int, Any, str | None]]) -> DecodedBatch:
    batch = DecodedBatch([], [], [])
    for i, payload, err in items:
        if err is None:
            batch.indices.append(i)
            batch.payloads.append(payload)
        else:
            batch.failed.append((i, err))
    return batch


def iter_decoded_batches(
    paths: Sequence[str | Path],
    transform: Transform,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
) -> Iterator[DecodedBatch]:
    """Yield decoded batches in input order; failed items are listed in each batch's ``failed``.

    With ``num_workers`` > 0 a pool of that many threads decodes ahead (at most ``PREFETCH_BATCHES``
    batches beyond the one yielded); closing the generator cancels what was not started and waits
    for the rest, so no decoding outlives it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = ImageFileDataset(paths, transform)
    n = len(dataset)
    if num_workers <= 0:
        for start in range(0, n, batch_size):
            yield collate_decoded([dataset[i] for i in range(start, min(start + batch_size, n))])
        return
    if n == 0:
        return
    window = batch_size * (1 + PREFETCH_BATCHES)
    pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="capsearch-decode")
    pending: deque[Future[tuple[int, Any, str | None]]] = deque()
    submitted = 0
    try:
        for start in range(0, n, batch_size):
            while submitted < min(n, start + window):
                pending.append(pool.submit(dataset.__getitem__, submitted))
                submitted += 1
            yield collate_decoded([pending.popleft().result() for _ in range(start, min(start + batch_size, n))])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def embed_batches(
    batches: Iterable[DecodedBatch],
    paths: Sequence[str],
    embed_batch: Callable[[list[Any]], np.ndarray],
    dim: int,
    limit: BatchLimit,
    *,
    on_error: ErrorCallback | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed decoded batches of ``paths``: ``(vectors float32 (n, dim), ok_mask bool (n,))``.

    ``embed_batch`` turns a list of transform outputs into an (m, dim) array; it is given at most
    ``limit.size`` of them at once. Rows of items that could not be read (or did not fit in GPU
    memory even alone) are zero and ``ok_mask`` is False there.
    """
    vectors = np.zeros((len(paths), dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    for batch in batches:
        failed = list(batch.failed)
        payloads = batch.payloads
        for chunk in run_chunks(len(payloads), limit, lambda a, b: embed_batch(payloads[a:b])):
            rows = batch.indices[chunk.start:chunk.stop]
            if chunk.out_of_memory:
                failed += [(i, OUT_OF_MEMORY) for i in rows]
            else:
                vectors[rows] = chunk.result
                ok[rows] = True
        for i, reason in failed:
            if on_error is not None:
                on_error(str(paths[i]), reason)
            else:
                log.warning("skipped %s: %s", paths[i], reason)
        if progress is not None:
            progress(len(batch.indices) + len(batch.failed), len(failed))
    return vectors, ok


class FileEmbedding:
    """``embed_paths`` for an image embedder: decode with ``path_transform()``, embed with ``embed_payloads``.

    The embedder sets ``dim``, ``batch_size`` and ``num_workers`` (decoding threads).
    """

    dim: int
    batch_size: int
    num_workers: int

    def path_transform(self) -> Transform:
        """PIL RGB image -> model input; it runs in the decoding threads, so it must be thread-safe."""
        raise NotImplementedError

    def embed_payloads(self, payloads: list[Any]) -> np.ndarray:
        """A list of ``path_transform()`` outputs -> (n, dim) float32 unit vectors."""
        raise NotImplementedError

    def decoded_batches(self, paths: Sequence[str], batch_size: int, num_workers: int) -> Iterator[DecodedBatch]:
        """The files decoded by ``path_transform()``, in batches of ``batch_size``, in input order."""
        return iter_decoded_batches(paths, self.path_transform(), batch_size=batch_size, num_workers=num_workers)

    def embed_paths(
        self,
        paths: Sequence[str | Path | PhotoSource],
        *,
        batch_size: int | None = None,
        num_workers: int | None = None,
        limit: BatchLimit | None = None,
        on_error: ErrorCallback | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embed photos (paths, URLs or ``PhotoSource``s), decoded by ``num_workers`` threads: ``(vectors, ok_mask)``.

        ``limit`` is the stage run's model batch limit (lowered by out of GPU memory and kept low);
        without one, out of memory lowers a limit that lasts for this call only.
        """
        paths = [_photo(p) for p in paths]
        size = batch_size or self.batch_size
        workers = self.num_workers if num_workers is None else num_workers
        with closing(self.decoded_batches(paths, size, workers)) as batches:
            return embed_batches(batches, paths, self.embed_payloads, self.dim, limit or BatchLimit(size),
                                 on_error=on_error, progress=progress)
