"""The runs of a workspace and their live progress, as the store records them.

A *run* is one execution of some stages on a workspace, whoever started it: ``capsearch run`` in
a shell, a background process the TUI (or ``run --detach``) started, a run of a Prefect deployment.
One runs at a time (``pipeline.run_lock``). The process that runs it records it here (``runs``),
writes each stage's progress at a bounded rate (``run_progress``, by ``pipeline.live_progress``) and
its messages (``run_log``), so any other process (a TUI opened later, ``capsearch status --follow``,
``capsearch cancel``) sees what is going on while it goes on: SQLite in WAL mode lets readers read
while the run writes.

A run whose process has ended without recording its end (killed, crashed, power cut) reads as
``crashed`` at once, and is recorded so by the next run that starts. Only the standard library and
the store: no Prefect, no Textual.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Iterable

from pipeline.stages.outcome import RunOutcome, StageOutcome, TokenUsage
from pipeline.states import RUN_ENDINGS, Status
from pipeline.store import Store
from pipeline.store.runs import LOG_LIMIT
from pipeline.store_rows import LogLine, RunInfo, StageLive


# -- the runs ----------------------------------------------------------------------------------------------
def start_run(store: Store, what: str, started_by: str, *, deployment: str = "", api_url: str = "",
              log_path: str = "", flow_run_id: str = "") -> int:
    """Record a run of this process (the caller holds the workspace's run lock); runs left ``running`` by
    ended processes are recorded ``crashed`` first."""
    return store.runs.start(what, started_by, deployment=deployment, api_url=api_url, log_path=log_path,
                            flow_run_id=flow_run_id)


def set_flow_run(store: Store, run_id: int, flow_run_id: str, api_url: str | None = None) -> None:
    store.runs.set_flow_run(run_id, flow_run_id, api_url)


def finish_run(store: Store, run_id: int, status: Status | str, message: str | None = None) -> None:
    status = Status(status)
    if status not in RUN_ENDINGS:
        raise ValueError(f"not how a run ends: {status}")
    store.runs.finish(run_id, status, message)


def mark_crashed(store: Store) -> list[int]:
    """Record runs left ``running`` by processes that have ended as ``crashed`` (and their stages as ended)."""
    return store.runs.mark_crashed()


def crashed_flow_run_ids(store: Store, limit: int = 20) -> list[str]:
    """The Prefect flow run ids of the newest runs and stage runs that crashed (their process ended without
    recording the end, so it could not tell Prefect either), newest first, each once."""
    ids = [r.flow_run_id for r in recent_runs(store, limit) if r.status is Status.CRASHED and r.flow_run_id]
    ids += [r.flow_run_id or "" for r in store.stage_runs(limit=4 * limit) if r.status is Status.CRASHED]
    return [i for i in dict.fromkeys(ids) if i]


def get_run(store: Store, run_id: int) -> RunInfo | None:
    return store.runs.get(run_id)


def current_run(store: Store) -> RunInfo | None:
    """The run going on in the workspace now (its process is alive, or on another host), if any."""
    return next((run for run in store.runs.marked_running() if run.is_running), None)


def recent_runs(store: Store, limit: int = 20) -> list[RunInfo]:
    return store.runs.recent(limit)


def run_for_flow_run(store: Store, flow_run_id: str) -> RunInfo | None:
    return store.runs.for_flow_run(flow_run_id)


# -- progress and messages -----------------------------------------------------------------------------------
def write_progress(store: Store, run_id: int, stages: Iterable[StageLive], lines: Iterable[LogLine] = ()) -> None:
    """Upsert stage rows and append messages, in one transaction (what the recorder's thread does)."""
    store.runs.write_progress(run_id, stages, lines)


def run_progress(store: Store, run_id: int) -> list[StageLive]:
    return store.runs.progress(run_id)


def run_log(store: Store, run_id: int, after: int = 0, limit: int = LOG_LIMIT) -> list[LogLine]:
    return store.runs.log(run_id, after, limit)


# -- in words ------------------------------------------------------------------------------------------------
def how_far(stages: list[StageLive]) -> str:
    """``at caption:knn-consensus 120 of 400 (stage 5)`` or ``starting``."""
    if not stages:
        return "starting"
    running = [s for s in stages if not s.ended]
    current = running[-1] if running else stages[-1]
    finished = sum(s.ended for s in stages)
    return f"at {current.describe()}; {finished} stage{'' if finished == 1 else 's'} finished"


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min"


def describe_run(run: RunInfo, stages: list[StageLive] | None = None) -> str:
    """One sentence naming a run: what, who started it, since when, how far it got."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at))
    where = f"pid {run.pid}" + (f" on {run.host}" if run.host else "")
    text = f"{run.what}, started by {run.started_by} ({where}) at {when}, {ago(time.time() - run.started_at)} ago"
    if run.deployment:
        text += f", a run of the Prefect deployment {run.deployment}"
    if stages is not None:
        text += f"; {how_far(stages)}"
    if run.log_path:
        text += f"; log: {run.log_path}"
    return text


ENDED_BADLY = ("crashed", "cancelled", "failed")
_WHY = {"crashed": "its process ended without recording the end (killed, out of memory or a power cut)",
        "cancelled": "it was stopped", "failed": "it failed"}


def last_heard(run: RunInfo, stages: list[StageLive]) -> float:
    """When a run last said anything: its recorded end, else its newest progress, else its start."""
    if run.finished_at:
        return run.finished_at
    return max([s.updated_at for s in stages], default=run.started_at)


def describe_ended_run(run: RunInfo, stages: list[StageLive]) -> str:
    """One sentence on a run that ended: how, what, who started it, when, how far it got, and why it ended.

    ``crashed at 2024-12-07 04:45:41 (5 min 3 s ago): every stage, started by ... (pid 123 on host) at 04:44:02;
    it got as far as caption:knn-consensus 120 of 400 (batch 4 of 13), 4 stages finished; <why>``."""
    end = last_heard(run, stages)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(end))
    started = time.strftime("%H:%M:%S" if time.localtime(end)[:3] == time.localtime(run.started_at)[:3]
                            else "%Y-%m-%d %H:%M:%S", time.localtime(run.started_at))
    where = f"pid {run.pid}" + (f" on {run.host}" if run.host else "")
    text = (f"{run.status} at {when} ({ago(time.time() - end)} ago): {run.what}, started by {run.started_by} "
            f"({where}) at {started}")
    if stages:
        # a stage stopped by a cancel or a failure also reports "finished": it is whole only with every item
        whole = [s.state == "not-applicable" or (s.ended and s.done + s.failures >= s.total) for s in stages]
        stopped = next((s for s, w in zip(stages, whole) if not w), None)
        counted = f"{sum(whole)} stage{'' if sum(whole) == 1 else 's'} finished"
        if stopped is None:
            text += f"; {counted}"
        else:
            # no rate for a run that ended; no batch "in flight" for a stage that recorded its end
            where = replace(stopped, rate=None, state="running", batches=0 if stopped.ended else stopped.batches)
            text += f"; it got as far as {where.describe()}, {counted}"
    else:
        text += "; it ended before its first stage started"
    reason = run.message or _WHY.get(run.status, "")
    if reason:
        text += f"; {reason}"
    if run.log_path:
        text += f"; log: {run.log_path}"
    return text


def recorded_outcome(store: Store, run: RunInfo) -> RunOutcome:
    """A run as the store recorded it, for whoever did not run it (the TUI follows runs of other processes):
    the ``RunOutcome`` that ``flows.api.run`` returns, with what the record holds: the run's status, time and
    message, and per stage its state and item counts (done, failed, of the items it had to compute) and what its
    requests to a model server cost."""
    stages = []
    usage = {f"{r.stage}:{r.variant}" if r.variant else r.stage: TokenUsage.from_dict(json.loads(r.usage))
             for r in store.stage_runs(limit=200) if r.run_id == run.id and r.usage}
    progress = run_progress(store, run.id)
    for live in progress:
        name, _, variant = live.stage.partition(":")
        outcome = StageOutcome(live.stage, name, variant, batches=live.batches, items=live.total, total=live.total,
                               done=live.done, failed=live.failures,
                               status=live.state if live.state.ended else run.status,
                               seconds=max(0.0, live.updated_at - live.started_at), usage=usage.get(live.stage))
        if live.state is Status.NOT_APPLICABLE:
            outcome.not_applicable(live.message)
        stages.append(outcome)
    # A run that never recorded its end (crashed) lasted until its last recorded progress, not until now.
    seconds = run.seconds if run.finished_at or not progress else max(p.updated_at for p in progress) - run.started_at
    return RunOutcome(run.status, seconds, stages, run.flow_run_id, error=run.message, run_id=run.id)


# -- watching ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunUpdate:
    """What changed in the watched run since the last poll."""
    run: RunInfo | None                      # its latest record (None: no run to watch)
    started: bool = False                    # first seen in this poll
    stages: tuple[StageLive, ...] = ()       # stages whose progress changed
    lines: tuple[LogLine, ...] = ()          # new messages
    ended: bool = False                      # it ended (completed, failed, cancelled, crashed) in this poll

    @property
    def changed(self) -> bool:
        return self.started or self.ended or bool(self.stages) or bool(self.lines)


class RunWatch:
    """Polls a workspace's runs: the run ``run_id``, or (``None``) whichever run is going on, then the next one.

    Each :meth:`poll` is a few small reads; writers are never blocked (WAL)."""

    def __init__(self, store: Store, run_id: int | None = None):
        self.store = store
        self.fixed = run_id is not None
        self.run_id = run_id
        self._seq = 0
        self._shown: dict[str, float] = {}
        self._announced = False

    def poll(self) -> RunUpdate:
        store = self.store
        started = False
        if self.run_id is None:
            run = current_run(store)
            if run is None:
                return RunUpdate(None)
            self.run_id, self._seq, self._shown = run.id, 0, {}
        run = get_run(store, self.run_id)
        if run is None:
            self.run_id = None
            return RunUpdate(None)
        if not self._announced:
            self._announced = started = True
        lines = tuple(run_log(store, run.id, after=self._seq))
        if lines:
            self._seq = lines[-1].seq
        stages = []
        for stage in run_progress(store, run.id):
            if self._shown.get(stage.stage) != stage.updated_at:
                self._shown[stage.stage] = stage.updated_at
                stages.append(stage)
        ended = not run.is_running
        if ended and not self.fixed:
            self.run_id, self._announced = None, False     # the next poll looks for the next run
        return RunUpdate(run, started, tuple(stages), lines, ended)
