"""Keys that step through a list (a metric, a method, a photo...) wrap around at either end."""
from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")


def cycle(items: Sequence[T], current: T, step: int = 1) -> T:
    """The item ``step`` places after ``current`` in ``items``, wrapping around; when ``current`` is not among
    them, the first item (stepping forward) or the last (stepping back). ``items`` must not be empty."""
    if current not in items:
        return items[0] if step > 0 else items[-1]
    return items[(items.index(current) + step) % len(items)]
