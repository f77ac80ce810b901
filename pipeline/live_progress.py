"""Writing a run's progress into the store, where any other process can read it while the run goes on.

:class:`ProgressRecorder` is a ``ProgressCallback``: stages call it (through their ``StageProgress``)
from whatever thread runs a batch, and it only updates a small in-memory picture. A thread of its
own writes that picture to ``run_progress`` and ``run_log`` (``pipeline.runs``): each stage at most
once per ``interval`` seconds, plus at once when a stage starts or finishes. So a batch never waits
for a progress write (and never writes progress inside its own transaction), and a stage that
reports every photo costs a few small transactions a second, not one per photo.

Nothing here can fail a run: a write that fails (the disk is full, the store is busy for a minute)
is dropped and tried again with the next picture.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from pipeline.progress import EventKind, ProgressEvent
from pipeline.runs import LOG_LIMIT, LogLine, StageLive, write_progress
from pipeline.states import Status
from pipeline.store import Store

DEFAULT_INTERVAL = 0.5


@dataclass
class _Stage:
    live: StageLive
    dirty: bool = True


class ProgressRecorder:
    """Records the progress events of run ``run_id`` in ``store`` at a bounded rate (see the module)."""

    def __init__(self, store: Store, run_id: int, interval: float = DEFAULT_INTERVAL, log_limit: int = LOG_LIMIT):
        self.store = store
        self.run_id = run_id
        self.interval = interval
        self.log_limit = log_limit
        self.writes = 0                     # transactions written (for tests and the benchmark)
        self.errors = 0
        self._lock = threading.Lock()
        self._stages: dict[str, _Stage] = {}
        self._lines: list[LogLine] = []
        self._seq = 0
        self._urgent = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="capsearch-progress", daemon=True)
        self._thread.start()

    # -- what stages call (any thread) -----------------------------------------------------------------
    def __call__(self, event: ProgressEvent) -> None:
        now = time.time()
        with self._lock:
            entry = self._stages.get(event.stage)
            if entry is None:
                started = now - max(0.0, event.at - event.started_at) if event.started_at else now
                entry = self._stages[event.stage] = _Stage(StageLive(
                    event.stage, len(self._stages), Status.RUNNING, 0, 0, 0, 0, 0, None, "", "info", started, now))
            live = entry.live
            if event.kind == EventKind.MESSAGE:
                live = replace(live, message=event.message, level=event.level, updated_at=now)
                if self._seq < self.log_limit:
                    self._seq += 1
                    self._lines.append(LogLine(self._seq, event.stage, event.level, event.message, now))
            elif event.kind == EventKind.NOT_APPLICABLE:
                live = replace(live, state=Status.NOT_APPLICABLE, message=event.message, updated_at=now)
            else:
                finish = event.kind == EventKind.FINISH
                state = Status.COMPLETED if finish else Status.RUNNING     # a stage started again runs again
                message = event.message if finish and event.message else live.message
                live = replace(live, state=state, done=event.done, total=event.total, failures=event.failures,
                               rate=event.rate, message=message, updated_at=now, tokens=event.tokens)
            entry.live = live
            entry.dirty = True
        if event.kind in (EventKind.START, EventKind.FINISH, EventKind.NOT_APPLICABLE):
            self._urgent.set()

    def batches(self, stage: str, done: int, total: int) -> None:
        """How many of the stage's batches are settled (computed, cached or with nothing to do)."""
        with self._lock:
            entry = self._stages.get(stage)
            if entry is None:
                return
            entry.live = replace(entry.live, batches_done=done, batches=total, updated_at=time.time())
            entry.dirty = True

    # -- the writer thread -----------------------------------------------------------------------------
    def _take(self) -> tuple[list[StageLive], list[LogLine]]:
        with self._lock:
            stages = [e.live for e in self._stages.values() if e.dirty]
            for e in self._stages.values():
                e.dirty = False
            lines, self._lines = self._lines, []
        return stages, lines

    def _write(self) -> None:
        stages, lines = self._take()
        if not stages and not lines:
            return
        try:
            write_progress(self.store, self.run_id, stages, lines)
            self.writes += 1
        except Exception:  # noqa: BLE001 - progress must never fail the run; the next picture is tried again
            self.errors += 1
            with self._lock:
                for s in stages:
                    entry = self._stages.get(s.stage)
                    if entry is not None:
                        entry.dirty = True
                self._lines = lines + self._lines

    def _loop(self) -> None:
        try:
            while True:
                self._urgent.wait(self.interval)
                self._urgent.clear()
                # read before the write: a close() while the write waits for the store comes with events the
                # write did not take (the stages' finish), and they get one more round
                closing = self._closed
                self._write()
                if closing:
                    return
        finally:
            try:
                self.store.close()   # the connection of this thread (the store keeps one per thread)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        """Write what is left and stop the thread (the run ends)."""
        if self._closed:
            return
        self._closed = True
        self._urgent.set()
        self._thread.join(timeout=30)
