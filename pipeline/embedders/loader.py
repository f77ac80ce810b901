"""Batched decoding of image files, shared by every image embedder.

Files are opened with ``pipeline.images.open_rgb`` (EXIF orientation, alpha
flattened), decoded and turned into model input by a per-image
``transform`` (in ``torch.utils.data.DataLoader`` worker processes when
``num_workers > 0``, in this process otherwise, without importing torch). A file
that cannot be read is reported through ``on_error(path, reason)`` and marked
not ok; the run goes on.

Flows embed inside a task thread (a ``ThreadPoolExecutor`` worker), so the
DataLoader's worker processes are forked from that thread. A child forked there
inherits ``concurrent.futures``' list of the parent's pool threads, and its exit
handler then tries to join the thread it is running on and exits with code 1.
The parent sees a worker "exit unexpectedly" (torch raises that in the main
thread if a DataLoader ever ran there: in the TUI it would end the app), so each
worker forgets the parent's pool threads when it starts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from pipeline.images import open_rgb

log = logging.getLogger(__name__)

ErrorCallback = Callable[[str, str], None]
ProgressFn = Callable[[int, int], None]  # (items done in this batch, failures in this batch)
Transform = Callable[[Any], Any]          # PIL RGB image -> model input (array or tensor)


def describe_error(exc: BaseException) -> str:
    """One line naming the kind of failure and its message."""
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"


class ImageFileDataset:
    """Map-style dataset: item i is ``(i, transform(image) or None, error or None)``.

    A plain class (no torch base) so that it also serves the in-process path.
    """

    def __init__(self, paths: Sequence[str | Path], transform: Transform):
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        try:
            return i, self.transform(open_rgb(self.paths[i])), None
        except Exception as exc:  # a bad file is reported, never fatal
            return i, None, describe_error(exc)


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
    """Yield decoded batches in input order; failed items are listed in each batch's ``failed``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = ImageFileDataset(paths, transform)
    if num_workers <= 0:
        for start in range(0, len(dataset), batch_size):
            yield collate_decoded([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_decoded,
        worker_init_fn=forget_parent_pool_threads,
    )
    yield from loader


def forget_parent_pool_threads(worker_id: int = 0) -> None:
    """In a forked worker: drop the parent's thread-pool threads, which do not exist here (see the module doc)."""
    import concurrent.futures.thread as pool_threads

    pool_threads._threads_queues.clear()


def embed_paths_with(
    paths: Sequence[str | Path],
    transform: Transform,
    embed_batch: Callable[[list[Any]], np.ndarray],
    dim: int,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    on_error: ErrorCallback | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed image files: ``(vectors float32 (n, dim), ok_mask bool (n,))``.

    ``embed_batch`` turns a list of transform outputs into an (m, dim) array.
    Rows of items that could not be read are zero and ``ok_mask`` is False there.
    """
    paths = [str(p) for p in paths]
    vectors = np.zeros((len(paths), dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    for batch in iter_decoded_batches(paths, transform, batch_size=batch_size, num_workers=num_workers):
        if batch.payloads:
            vectors[batch.indices] = embed_batch(batch.payloads)
            ok[batch.indices] = True
        for i, reason in batch.failed:
            if on_error is not None:
                on_error(paths[i], reason)
            else:
                log.warning("skipped %s: %s", paths[i], reason)
        if progress is not None:
            progress(len(batch.indices) + len(batch.failed), len(batch.failed))
    return vectors, ok


class FileEmbedding:
    """``embed_paths`` for an image embedder: decode with ``path_transform()``, embed with ``embed_payloads``.

    The embedder sets ``dim``, ``batch_size`` and ``num_workers``.
    """

    dim: int
    batch_size: int
    num_workers: int

    def path_transform(self) -> Transform:
        """PIL RGB image -> model input; it runs in the loader workers, so it must pickle."""
        raise NotImplementedError

    def embed_payloads(self, payloads: list[Any]) -> np.ndarray:
        """A list of ``path_transform()`` outputs -> (n, dim) float32 unit vectors."""
        raise NotImplementedError

    def embed_paths(
        self,
        paths: Sequence[str | Path],
        *,
        batch_size: int | None = None,
        num_workers: int | None = None,
        on_error: ErrorCallback | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embed image files, decoded in DataLoader workers when ``num_workers > 0``: ``(vectors, ok_mask)``."""
        return embed_paths_with(
            paths,
            self.path_transform(),
            self.embed_payloads,
            self.dim,
            batch_size=batch_size or self.batch_size,
            num_workers=self.num_workers if num_workers is None else num_workers,
            on_error=on_error,
            progress=progress,
        )
