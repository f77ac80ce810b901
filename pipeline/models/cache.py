"""A process-wide cache of loaded models.

A model is loaded once per process and reused by every batch (never once per
batch or per task). Keys are the backend's identity string (model name, device,
dtype, ...). Loading is serialised per key so two threads never load the same
model twice.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_models: dict[str, Any] = {}
_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()
load_counts: dict[str, int] = {}  # how many times each key was actually loaded (tests assert on it)


def get_or_load(key: str, loader: Callable[[], T]) -> T:
    if key in _models:
        return _models[key]
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _models:
            _models[key] = loader()
            load_counts[key] = load_counts.get(key, 0) + 1
        return _models[key]


def evict(key: str | None = None) -> None:
    """Drop one model (or all) so its memory can be reclaimed."""
    with _guard:
        if key is None:
            _models.clear()
        else:
            _models.pop(key, None)
