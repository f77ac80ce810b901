"""Following the run going on in the workspace, whoever started it, from the TUI.

Runs execute outside the TUI (``flows.runtime.detach``), so the TUI learns about them the way any other
process does: from the store, where the running process records the run and its stages' progress
(``pipeline.runs``). :class:`RunFollower` is a daemon thread that polls it every half second and posts
typed messages to the screen: ``RunSeen`` when a run is going on (also one started before the TUI
opened, from a shell or by a deployment), ``StageProgressed`` for each changed stage and each new
message, ``RunFinished`` when it ends. A run this TUI launched that began and ended between two polls
(a run with nothing to compute is settled in a fraction of a second, often before the launch returns) is
reported from the store all the same, found by what the launch knows of it: its run id, its process, or
its Prefect flow run. It also collects background processes this TUI started once they end, and watches a run this
TUI asked ``capsearch serve`` for until its process has claimed the workspace (a flow run of a
deployment that fails before that is reported too).
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from textual.message import Message

from pipeline.progress import ProgressEvent
from pipeline.runs import RunUpdate, RunWatch, recent_runs, recorded_outcome
from pipeline.stages.outcome import RunOutcome
from pipeline.workspace import Workspace
from tui.messages import RunFinished, RunSeen, StageProgressed

POLL_SECONDS = 0.5
PREFECT_POLL_SECONDS = 2.0


def messages_for(update: RunUpdate, outcome: RunOutcome | None = None) -> list[Message]:
    """The screen's messages for one poll of the watched run (``outcome``: the run's, once it has ended)."""
    out: list[Message] = []
    run = update.run
    if run is None:
        return out
    if update.started:
        out.append(RunSeen(run))
    for line in update.lines:
        out.append(StageProgressed(ProgressEvent(line.stage, "message", message=line.text, level=line.level)))  # type: ignore[arg-type]
    for stage in update.stages:
        out.append(StageProgressed(stage.event()))
    if update.ended:
        out.append(RunFinished(outcome or RunOutcome(run.status, run.seconds, error=run.message, run_id=run.id)))
    return out


class RunFollower:
    """Polls the workspace's runs in a daemon thread and posts what changed (see the module)."""

    def __init__(self, ws: Workspace, post: Callable[[Message], object], interval: float = POLL_SECONDS):
        self.ws = ws
        self.post = post
        self.interval = interval
        self.pending = None                 # a Detached run of a deployment, until its process claims the workspace
        self._launched: list = []           # Detached background runs this TUI started (to collect them)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="capsearch-follow", daemon=True)
        self._last_prefect = 0.0
        self._expected: list = []                 # Detached runs launched here whose end is not posted yet
        self._reported: set[int] = set()          # runs whose end was posted
        self._lock = threading.Lock()             # launched() is called from the app's thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def launched(self, detached) -> None:
        with self._lock:
            self._expected.append(detached)
        if detached.how == "deployment":
            self.pending = detached
        elif detached.process is not None:
            self._launched.append(detached)

    def _loop(self) -> None:
        watch = RunWatch(self.ws.store)
        try:
            while not self._stop.is_set():
                try:
                    self.poll(watch)
                except Exception:  # noqa: BLE001 - a busy or vanished store: try again next time
                    pass
                self._stop.wait(self.interval)
        finally:
            try:
                self.ws.store.close()   # this thread's connection
            except Exception:  # noqa: BLE001
                pass

    def poll(self, watch: RunWatch) -> None:
        update = watch.poll()
        run = update.run
        self._post(update)
        self._launched = [d for d in self._launched if d.reap() is None]
        if run is None and self._expected:
            self._report_missed()
        if self.pending is not None and run is None:
            self._check_pending()

    def _post(self, update: RunUpdate) -> None:
        run = update.run
        if run is None:
            return
        if self.pending is not None and run.flow_run_id == self.pending.flow_run_id:
            self.pending = None
        if update.ended:
            self._reported.add(run.id)
            with self._lock:
                self._expected = [d for d in self._expected if not _launched_as(d, run)]
        outcome = recorded_outcome(self.ws.store, run) if update.ended else None
        for message in messages_for(update, outcome):
            self.post(message)

    def _report_missed(self) -> None:
        """A run launched here that ended before any poll saw it: its start, progress and end."""
        with self._lock:
            expected = list(self._expected)
        for run in sorted(recent_runs(self.ws.store, 10), key=lambda r: r.id):
            if not run.is_running and run.id not in self._reported and any(_launched_as(d, run) for d in expected):
                self._post(RunWatch(self.ws.store, run.id).poll())

    def _check_pending(self) -> None:
        """A deployment run that ended before it claimed the workspace (refused, crashed, cancelled)."""
        now = time.monotonic()
        if now - self._last_prefect < PREFECT_POLL_SECONDS:
            return
        self._last_prefect = now
        pending = self.pending
        from flows.runtime.control import flow_run_end
        from pipeline.runs import run_for_flow_run

        end = flow_run_end(pending.api_url, pending.flow_run_id)
        if end is None:
            return       # still going (or the server is busy: ask again later)
        if run_for_flow_run(self.ws.store, pending.flow_run_id) is not None:
            return   # it did claim the workspace: the watch reports its end
        self.pending = None
        with self._lock:
            self._expected = [d for d in self._expected if d is not pending]   # it will never have a run
        self.post(RunFinished(RunOutcome(end.status, error=end.message, flow_run_id=pending.flow_run_id)))


def _launched_as(detached, run) -> bool:
    """Whether ``run`` (a row of the store) is the run of the launch ``detached``."""
    if detached.run_id is not None:
        return run.id == detached.run_id
    if detached.flow_run_id:
        return run.flow_run_id == detached.flow_run_id
    # a process id is unique among live processes only: its run started after the launch
    return detached.pid is not None and run.pid == detached.pid and run.started_at >= detached.started
