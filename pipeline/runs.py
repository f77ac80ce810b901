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
from dataclasses import dataclass
from typing import Any, Iterable

from pipeline.progress import ProgressEvent
from pipeline.run_owner import current_owner, owner_state
from pipeline.stages.outcome import RunOutcome, StageOutcome
from pipeline.store import Store

FINAL_STATES = ("completed", "failed", "cancelled", "crashed")
KEEP_RUNS = 50                    # runs whose progress and messages are kept (older ones: the row only)
LOG_LIMIT = 1000                  # messages kept per run


@dataclass(frozen=True)
class RunInfo:
    id: int
    owner: str
    status: str
    what: str
    started_by: str
    started_at: float
    finished_at: float | None = None
    flow_run_id: str = ""
    deployment: str = ""
    api_url: str = ""
    log_path: str = ""
    message: str = ""

    @property
    def pid(self) -> int | None:
        return _owner_field(self.owner, "pid")

    @property
    def host(self) -> str:
        return str(_owner_field(self.owner, "host") or "")

    @property
    def is_running(self) -> bool:
        return self.status == "running"

    @property
    def seconds(self) -> float:
        return (self.finished_at or time.time()) - self.started_at


@dataclass(frozen=True)
class StageLive:
    """What a running (or finished) stage of a run last reported."""
    stage: str
    position: int
    state: str                     # 'running' | 'finished' | 'not-applicable' (the stage does not apply: message says why)
    done: int
    total: int
    failures: int
    batches_done: int
    batches: int
    rate: float | None
    message: str
    level: str
    started_at: float              # wall clock
    updated_at: float

    @property
    def ended(self) -> bool:
        return self.state in ("finished", "not-applicable")

    def event(self) -> ProgressEvent:
        """The same numbers as a progress event (for the progress bars of the CLI and the TUI)."""
        now_mono, now = time.monotonic(), time.time()
        at = now_mono - max(0.0, now - self.updated_at)
        started = now_mono - max(0.0, now - self.started_at)
        kind = {"finished": "finish", "not-applicable": "not-applicable"}.get(self.state, "advance")
        return ProgressEvent(self.stage, kind, done=self.done,
                             total=self.total, failures=self.failures, message=self.message if self.ended else "",
                             started_at=started, at=at)

    def describe(self) -> str:
        """``caption:knn-consensus 120 of 400 (3 failed), 12.0/s``."""
        if self.state == "not-applicable":
            return f"{self.stage} not applicable: {self.message}"
        text = f"{self.stage} {self.done} of {self.total}" if self.total else f"{self.stage} starting"
        if self.batches and self.state != "finished":
            text += f" (batch {min(self.batches_done + 1, self.batches)} of {self.batches})"
        if self.failures:
            text += f" ({self.failures} failed)"
        if self.state == "finished":
            text += ", finished"
        elif self.rate:
            text += f", {self.rate:.1f}/s"
        return text


@dataclass(frozen=True)
class LogLine:
    seq: int
    stage: str
    level: str
    text: str
    at: float


def _owner_field(owner: str, key: str) -> Any:
    try:
        return json.loads(owner).get(key)
    except (ValueError, AttributeError):
        return None


def _info(row: Any) -> RunInfo:
    r = dict(row)
    status = r["status"]
    if status == "running" and owner_state(r["owner"]) == "dead":
        status = "crashed"       # read as crashed at once; recorded so by the next run
    return RunInfo(r["id"], r["owner"], status, r["what"], r["started_by"], r["started_at"], r["finished_at"],
                   r["flow_run_id"] or "", r["deployment"] or "", r["api_url"] or "", r["log_path"] or "",
                   r["message"] or "")


# -- the runs ----------------------------------------------------------------------------------------------
def start_run(store: Store, what: str, started_by: str, *, deployment: str = "", api_url: str = "",
              log_path: str = "", flow_run_id: str = "") -> int:
    """Record a run of this process (the caller holds the workspace's run lock)."""
    now = time.time()
    with store.transaction() as c:
        mark_crashed(store)
        cur = c.execute(
            "INSERT INTO runs(owner, status, what, started_by, started_at, flow_run_id, deployment, api_url, log_path) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (current_owner(), "running", what, started_by, now, flow_run_id or None, deployment or None, api_url or None,
             log_path or None))
        run_id = int(cur.lastrowid)
        _prune(c, run_id)
    return run_id


def _prune(c: Any, newest: int) -> None:
    c.execute("DELETE FROM run_progress WHERE run_id <= ?", (newest - KEEP_RUNS,))
    c.execute("DELETE FROM run_log WHERE run_id <= ?", (newest - KEEP_RUNS,))


def set_flow_run(store: Store, run_id: int, flow_run_id: str, api_url: str | None = None) -> None:
    with store.transaction() as c:
        c.execute("UPDATE runs SET flow_run_id=?, api_url=COALESCE(?, api_url) WHERE id=?",
                  (flow_run_id or None, api_url, run_id))


def finish_run(store: Store, run_id: int, status: str, message: str | None = None) -> None:
    if status not in FINAL_STATES:
        raise ValueError(f"not a final state: {status}")
    with store.transaction() as c:
        c.execute("UPDATE runs SET status=?, finished_at=?, message=? WHERE id=? AND status='running'",
                  (status, time.time(), (message or None) and message[:1000], run_id))


def mark_crashed(store: Store) -> list[int]:
    """Record runs left ``running`` by processes that have ended as ``crashed`` (and their stages as ended)."""
    with store.transaction() as c:
        dead = [r[0] for r in c.execute("SELECT id, owner FROM runs WHERE status='running'")
                if owner_state(r[1]) == "dead"]
        now = time.time()
        c.executemany("UPDATE runs SET status='crashed', finished_at=?, "
                      "message=COALESCE(message, 'its process ended without finishing it (killed?)') "
                      "WHERE id=? AND status='running'", [(now, i) for i in dead])
    return dead


def crashed_flow_run_ids(store: Store, limit: int = 20) -> list[str]:
    """The Prefect flow run ids of the newest runs and stage runs that crashed (their process ended without
    recording the end, so it could not tell Prefect either), newest first, each once."""
    ids = [r.flow_run_id for r in recent_runs(store, limit) if r.status == "crashed" and r.flow_run_id]
    ids += [r.flow_run_id or "" for r in store.stage_runs(limit=4 * limit) if r.status == "crashed"]
    return [i for i in dict.fromkeys(ids) if i]


def get_run(store: Store, run_id: int) -> RunInfo | None:
    row = store.conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
    return _info(row) if row else None


def current_run(store: Store) -> RunInfo | None:
    """The run going on in the workspace now (its process is alive, or on another host), if any."""
    for row in store.conn.execute("SELECT * FROM runs WHERE status='running' ORDER BY id DESC"):
        info = _info(row)
        if info.is_running:
            return info
    return None


def recent_runs(store: Store, limit: int = 20) -> list[RunInfo]:
    return [_info(r) for r in store.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))]


def run_for_flow_run(store: Store, flow_run_id: str) -> RunInfo | None:
    row = store.conn.execute("SELECT * FROM runs WHERE flow_run_id=? ORDER BY id DESC LIMIT 1", (flow_run_id,)).fetchone()
    return _info(row) if row else None


# -- progress and messages -----------------------------------------------------------------------------------
def write_progress(store: Store, run_id: int, stages: Iterable[StageLive], lines: Iterable[LogLine] = ()) -> None:
    """Upsert stage rows and append messages, in one transaction (what the recorder's thread does)."""
    with store.transaction() as c:
        c.executemany(
            "INSERT INTO run_progress(run_id, stage, position, state, done, total, failures, batches_done, batches, "
            "rate, message, level, started_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(run_id, stage) DO UPDATE SET state=excluded.state, done=excluded.done, total=excluded.total, "
            "failures=excluded.failures, batches_done=excluded.batches_done, batches=excluded.batches, "
            "rate=excluded.rate, message=excluded.message, level=excluded.level, updated_at=excluded.updated_at",
            [(run_id, s.stage, s.position, s.state, s.done, s.total, s.failures, s.batches_done, s.batches, s.rate,
              s.message or None, s.level or None, s.started_at, s.updated_at) for s in stages])
        c.executemany("INSERT OR IGNORE INTO run_log(run_id, seq, stage, level, text, at) VALUES (?,?,?,?,?,?)",
                      [(run_id, line.seq, line.stage, line.level, line.text, line.at) for line in lines])


def run_progress(store: Store, run_id: int) -> list[StageLive]:
    rows = store.conn.execute("SELECT * FROM run_progress WHERE run_id=? ORDER BY position", (run_id,))
    return [StageLive(r["stage"], r["position"], r["state"], r["done"], r["total"], r["failures"], r["batches_done"],
                      r["batches"], r["rate"], r["message"] or "", r["level"] or "info", r["started_at"],
                      r["updated_at"]) for r in rows]


def run_log(store: Store, run_id: int, after: int = 0, limit: int = LOG_LIMIT) -> list[LogLine]:
    rows = store.conn.execute("SELECT seq, stage, level, text, at FROM run_log WHERE run_id=? AND seq>? "
                              "ORDER BY seq LIMIT ?", (run_id, after, limit))
    return [LogLine(r[0], r[1], r[2], r[3], r[4]) for r in rows]


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


def recorded_outcome(store: Store, run: RunInfo) -> RunOutcome:
    """A run as the store recorded it, for whoever did not run it (the TUI follows runs of other processes):
    the ``RunOutcome`` that ``flows.api.run`` returns, with what the record holds: the run's status, time and
    message, and per stage its state and item counts (done, failed, of the items it had to compute)."""
    stages = []
    progress = run_progress(store, run.id)
    for live in progress:
        name, _, variant = live.stage.partition(":")
        outcome = StageOutcome(live.stage, name, variant, batches=live.batches, items=live.total, total=live.total,
                               done=live.done, failed=live.failures,
                               status="completed" if live.state == "finished" else run.status,
                               seconds=max(0.0, live.updated_at - live.started_at))
        if live.state == "not-applicable":
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
