"""When and how long to wait before trying an HTTP request again: one policy for every OpenAI-compatible client.

Used by the query generator (``pipeline.queries.openai_gen``) and the endpoint captioner
(``pipeline.captioners.endpoint``). A request is tried again after 408, 409, 429 and any 5xx answer, a
timeout or a dropped connection; never after other answers (400, 401, 404 ...), which would fail the same
way. The wait before try ``attempt + 1`` is ``base * 2**attempt`` seconds, capped at ``cap``, times a random
factor in [0.5, 1] (jitter, so that many clients rate-limited at once do not come back at once), or the
server's ``Retry-After`` (seconds, an HTTP date, or ``retry-after-ms``) when that is longer, also capped.
"""
from __future__ import annotations

import email.utils
import random
import time
from typing import Mapping

RETRYABLE_STATUS = frozenset({408, 409, 429})


def retryable_status(status: int | None) -> bool:
    """Whether an answer with this HTTP status is worth another try (``None``: no answer at all)."""
    return status is None or status in RETRYABLE_STATUS or status >= 500


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a server asked for in ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait after failed try number ``attempt`` (0 for the first): see the module."""
    delay = min(cap, base * 2 ** attempt) * (rng or random).uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
