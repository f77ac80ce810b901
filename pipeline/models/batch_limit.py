"""Out of GPU memory: halve the batch, and keep it halved for the rest of the stage run.

A stage owns one ``BatchLimit`` per model for a whole stage run (a stage object lives for one
run and every batch task of that run uses it, from whichever thread runs the task), so once the
GPU has shown that a batch of 16 does not fit, every later batch starts at 8 instead of failing
at 16 first. ``run_chunks`` is the loop every batched model call of captioning and image
embedding goes through.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from pipeline.models.device import free_accelerator_memory, is_oom

T = TypeVar("T")

OUT_OF_MEMORY = "out of GPU memory"


class BatchLimit:
    """The most items a model is given at once: the configured batch size until out of memory lowers it."""

    def __init__(self, configured: int):
        if configured < 1:
            raise ValueError(f"batch size must be at least 1 (got {configured})")
        self.configured = configured
        self._size = configured
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def lower_after_oom(self, tried: int) -> int | None:
        """A batch of ``tried`` items ran out of memory: the size to try next, kept for every later batch.

        The limit is halved until it is below ``tried`` (another thread may have lowered it already);
        ``None`` when ``tried`` was a single item, which no smaller batch can help.
        """
        if tried <= 1:
            return None
        with self._lock:
            while self._size >= tried:
                self._size = max(1, self._size // 2)
            return self._size

    def __repr__(self) -> str:
        return f"BatchLimit(size={self._size}, configured={self.configured})"


@dataclass(frozen=True)
class Chunk(Generic[T]):
    start: int                 # items [start, stop) of the sequence
    stop: int
    result: T | None           # what the call returned; None when out of memory even for one item
    seconds: float             # time of the call that succeeded (or of the last attempt)

    @property
    def out_of_memory(self) -> bool:
        return self.result is None


def run_chunks(n: int, limit: BatchLimit, call: Callable[[int, int], T],
               on_lowered: Callable[[int], None] | None = None) -> Iterator[Chunk[T]]:
    """``call(start, stop)`` over consecutive chunks of ``range(n)``, each at most ``limit.size`` long.

    Out of memory frees the accelerator's cache, lowers the limit (``on_lowered`` is told the new
    size) and runs the same items again in smaller chunks; a single item that does not fit is
    yielded with ``result=None``. Any other exception propagates. ``call`` must not return None.
    """
    start = 0
    while start < n:
        stop = min(n, start + limit.size)
        started = time.monotonic()
        try:
            result = call(start, stop)
        except Exception as exc:
            if not is_oom(exc):
                raise
        else:
            yield Chunk(start, stop, result, time.monotonic() - started)
            start = stop
            continue
        # out of memory; here, outside the except block, the failed attempt's frames (and tensors) are gone
        free_accelerator_memory()
        lowered = limit.lower_after_oom(stop - start)
        if lowered is not None:
            if on_lowered is not None:
                on_lowered(lowered)
            continue
        yield Chunk(start, stop, None, time.monotonic() - started)
        start = stop
