"""A failed worker as the user is told about it (``CapsearchApp.on_worker_state_changed`` makes them)."""
from __future__ import annotations

from dataclasses import dataclass

from textual.worker import Worker

from pipeline.errors import reason


@dataclass(frozen=True)
class WorkerFailure:
    """What a worker was doing (its ``description``), the worker group, and why it failed (one line)."""

    what: str
    group: str
    reason: str

    @classmethod
    def of(cls, worker: Worker) -> WorkerFailure:
        return cls(worker.description or worker.name or "a background task", worker.group, reason(worker.error))

    def line(self) -> str:
        return f"{self.what} failed: {self.reason}"
