"""Typed progress events.

Stages report progress by calling a ``ProgressCallback`` with ``ProgressEvent``s.
The CLI turns them into rich progress bars, the TUI into ProgressBar widgets, and
the flows into Prefect progress artifacts. This module has no dependencies so
that every layer can import it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, Literal


class EventKind(StrEnum):
    """What happened (a verb; how the stage then stands is a ``pipeline.states.Status``: ``StageLive.state``)."""

    START = "start"
    ADVANCE = "advance"
    MESSAGE = "message"
    FINISH = "finish"
    NOT_APPLICABLE = "not-applicable"    # the stage does not apply: the message says why


@dataclass(frozen=True)
class ProgressEvent:
    stage: str                    # e.g. "embed-images" or "caption:blip-base"
    kind: EventKind
    done: int = 0                 # items finished so far in this stage run (including failures)
    total: int = 0                # items this stage run will process
    failures: int = 0             # items that failed so far
    message: str = ""             # free text for the log pane ("skipped x.jpg: truncated file")
    level: Literal["info", "warning", "error"] = "info"
    started_at: float = 0.0       # time.monotonic() when the stage started
    at: float = field(default_factory=time.monotonic)
    tokens: int = 0               # model-server tokens (read and written) so far: an endpoint captioner's

    @property
    def fraction(self) -> float:
        return (self.done / self.total) if self.total else (1.0 if self.kind == EventKind.FINISH else 0.0)

    @property
    def rate(self) -> float | None:
        """Items per second since the stage started."""
        elapsed = self.at - self.started_at
        if self.done <= 0 or elapsed <= 0 or not self.started_at:
            return None
        return self.done / elapsed

    @property
    def token_rate(self) -> float | None:
        """Model-server tokens per second since the stage started (None for a stage that sends none)."""
        elapsed = self.at - self.started_at
        if self.tokens <= 0 or elapsed <= 0 or not self.started_at:
            return None
        return self.tokens / elapsed

    @property
    def eta_seconds(self) -> float | None:
        rate = self.rate
        if rate is None or not self.total:
            return None
        return max(0.0, (self.total - self.done) / rate)


ProgressCallback = Callable[[ProgressEvent], None]


def null_progress(event: ProgressEvent) -> None:  # pragma: no cover - trivial
    return None


class StageProgress:
    """Helper a stage uses to emit consistent events for one run."""

    def __init__(self, stage: str, total: int, callback: ProgressCallback | None = None):
        self.stage = stage
        self.total = total
        self.done = 0
        self.failures = 0
        self.tokens = 0
        self.callback = callback or null_progress
        self.started_at = time.monotonic()
        self._emit(EventKind.START)

    def _emit(self, kind: EventKind, message: str = "", level: str = "info") -> None:
        self.callback(
            ProgressEvent(
                stage=self.stage, kind=kind, done=self.done, total=self.total,
                failures=self.failures, message=message, level=level,  # type: ignore[arg-type]
                started_at=self.started_at, tokens=self.tokens,
            )
        )

    def advance(self, n: int = 1, failures: int = 0, tokens: int = 0) -> None:
        """``n`` more items settled, ``failures`` of them failed; ``tokens``: what they cost a model server."""
        self.done += n
        self.failures += failures
        self.tokens += tokens
        self._emit(EventKind.ADVANCE)

    def add_work(self, n: int) -> None:
        """``n`` more units of work than announced (negative: fewer). A stage that learns how much work its
        items are once a batch starts (caption-metrics: the metrics of each row) counts in those finer units."""
        self.total = max(self.done, self.total + n)
        self._emit(EventKind.ADVANCE)

    def message(self, text: str, level: str = "info") -> None:
        self._emit(EventKind.MESSAGE, text, level)

    def finish(self, message: str = "") -> None:
        self._emit(EventKind.FINISH, message)

    def not_applicable(self, reason: str) -> None:
        """The stage does not apply to this workspace (``Stage.applicable``): nothing ran, nothing failed."""
        self._emit(EventKind.NOT_APPLICABLE, reason)
