"""Launching a run from the TUI: the flows API in a worker thread, with library output kept off the screen."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.progress import ProgressCallback
from pipeline.workspace import Workspace
from tui.messages import RunRequest
from tui.quiet import route_library_logging


@dataclass(frozen=True)
class RunOutcome:
    outcome: str                   # 'completed' | 'cancelled' | 'failed'
    detail: str = ""
    failed_items: int = 0
    seconds: float = 0.0


def _summary_failures(summary: object) -> int:
    """Failed items in a RunSummary, whatever shape it reports them in."""
    for name in ("failed", "failed_items", "n_failed"):
        value = getattr(summary, name, None)
        if isinstance(value, int):
            return value
    stages = getattr(summary, "stages", None) or []
    total = 0
    for s in stages:
        result = getattr(s, "result", s)
        total += int(getattr(result, "failed", 0) or 0)
    return total


def run_request(ws: Workspace, request: RunRequest, progress: ProgressCallback, cancel: threading.Event, *,
                log_path: Path | None = None,
                on_warning: Callable[[logging.LogRecord], None] | None = None) -> RunOutcome:
    """Run what ``request`` asks through ``flows.api.run``; never raises (a failure is an outcome)."""
    t0 = time.perf_counter()
    try:
        from flows.api import run  # imports Prefect: only when a run starts

        route_library_logging(log_path, on_warning)
        summary = run(ws, list(request.stages) if request.stages else None,
                      list(request.captioners) if request.captioners else None,
                      progress=progress, retry_failed=request.retry_failed, cancel=cancel)
    except Exception as exc:  # noqa: BLE001 - shown to the user as the run's outcome
        outcome = "cancelled" if cancel.is_set() else "failed"
        return RunOutcome(outcome, f"{type(exc).__name__}: {exc}" if outcome == "failed" else str(exc),
                          seconds=time.perf_counter() - t0)
    finally:
        route_library_logging(log_path, on_warning)
    outcome = getattr(summary, "status", None) or ("cancelled" if cancel.is_set() else "completed")
    return RunOutcome(outcome, getattr(summary, "error", "") or "", _summary_failures(summary),
                      time.perf_counter() - t0)
