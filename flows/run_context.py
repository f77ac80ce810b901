"""The run session: the workspace, live stage objects, the progress callback, the cancel flag.

Batch tasks get the session itself (``flows.tasks.run_batch``: they run in the flow's process, and Prefect
hands a thread-runner task its parameters as they are). Flow parameters are another matter: Prefect
validates them and records them with the flow run as JSON, so the ``pipeline`` flow and the stage flows
(subflows) carry only the run key (a string) and find the session here, in a registry of this process's
runs, which is also where ``pipeline.shutdown`` reaches every run's cancel event. A flow started any other
way (a deployment run) opens a session of its own. Nothing here ever leaves the flow's process: what a
Dask worker computes gets a ``pipeline.compute.jobs.BatchJob`` instead, and a worker never builds a stage.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from pipeline import shutdown
from pipeline.progress import ProgressCallback, ProgressEvent, StageProgress
from pipeline.stages.base import Stage
from pipeline.stages.outcome import StageOutcome
from pipeline.stages.registry import build_stage
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class StageRef:
    """A stage of a run as the batch task names it: the workspace, the stage name (or ``module:Class``), its
    variant, configuration hash and label (the label is part of the cache key)."""
    workspace: str
    name: str
    variant: str = ""
    config_hash: str = ""
    label: str = ""             # the stage's label (``caption:blip-base``): part of the cache key

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", f"{self.name}:{self.variant}" if self.variant else self.name)


class LockedProgress(StageProgress):
    """StageProgress whose counters may be advanced from several task threads at once."""

    def __init__(self, stage: str, total: int, callback: ProgressCallback | None = None):
        self._lock = threading.RLock()
        super().__init__(stage, total, callback)

    def advance(self, n: int = 1, failures: int = 0, tokens: int = 0) -> None:
        with self._lock:
            super().advance(n, failures, tokens)

    def add_work(self, n: int) -> None:
        with self._lock:
            super().add_work(n)

    def message(self, text: str, level: str = "info") -> None:
        with self._lock:
            super().message(text, level)

    def finish(self, message: str = "") -> None:
        with self._lock:
            super().finish(message)


def _safe(*callbacks: ProgressCallback | None) -> ProgressCallback | None:
    """One callback calling each of ``callbacks`` that never breaks a task: errors in UI code are swallowed."""
    chosen = [c for c in callbacks if c is not None]
    if not chosen:
        return None

    def call(event: ProgressEvent) -> None:
        for callback in chosen:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - a progress bar must not fail a batch
                pass

    return call


@dataclass
class RunContext:
    key: str
    ws: Workspace
    progress: ProgressCallback | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    stages: dict[tuple[str, str], Stage] = field(default_factory=dict)
    trackers: dict[str, StageProgress] = field(default_factory=dict)
    outcomes: list[StageOutcome] = field(default_factory=list)   # filled by the stage flows as they end
    flow_run_id: str | None = None
    run_id: int | None = None                   # the workspace run (``pipeline.runs``) once claimed
    recorder: Any = None                        # its ProgressRecorder: live progress in the store
    send_photos: bool = False                   # batch jobs for workers carry local photos' bytes
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stage(self, name: str, variant: str = "") -> Stage:
        """One stage object per (name, variant) for the whole run, shared by every batch task."""
        with self._lock:
            st = self.stages.get((name, variant))
            if st is None:
                st = self.stages[(name, variant)] = build_stage(self.ws, name, variant)
            return st

    def tracker(self, label: str, total: int) -> StageProgress:
        sp = LockedProgress(label, total, _safe(self.progress, self.recorder))
        self.trackers[label] = sp
        return sp


_runs: dict[str, RunContext] = {}
_runs_lock = threading.Lock()


def open_run(ws: Workspace, progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> RunContext:
    """Register a run; a stop signal (``pipeline.shutdown``) sets its cancel event, so it stops between batches."""
    ctx = RunContext(uuid.uuid4().hex, ws, progress, cancel or threading.Event())
    with _runs_lock:
        _runs[ctx.key] = ctx
    shutdown.track(ctx.cancel)
    return ctx


def lookup(key: str) -> RunContext | None:
    with _runs_lock:
        return _runs.get(key)


def close_run(key: str) -> None:
    with _runs_lock:
        ctx = _runs.pop(key, None)
    if ctx is not None:
        shutdown.untrack(ctx.cancel)


def context_for(workspace: str, key: str) -> RunContext:
    """The registered run, or a fresh one (a flow started by a deployment or from another process)."""
    ctx = lookup(key) if key else None
    return ctx if ctx is not None else open_run(Workspace(workspace))
