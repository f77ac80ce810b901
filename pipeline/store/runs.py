"""The runs tables (schema 5): the runs of a workspace, their stages' live progress and their messages.

``Store.runs``; ``pipeline.runs`` is what the rest of capsearch calls (the runs of a workspace, in words,
watched). A run whose owner process has ended while its row says ``running`` is read as ``crashed`` at
once (``pipeline.run_owner``), and recorded so by the next run that starts.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from pipeline.run_owner import current_owner, owner_state
from pipeline.states import Status
from pipeline.store.database import Database
from pipeline.store_rows import LogLine, RunInfo, StageLive

KEEP_RUNS = 50                    # runs whose progress and messages are kept (older ones: the row only)
LOG_LIMIT = 1000                  # messages kept per run


def _info(row: Any) -> RunInfo:
    r = dict(row)
    status = r["status"]
    if status == Status.RUNNING and owner_state(r["owner"]) == "dead":
        status = Status.CRASHED   # read as crashed at once; recorded so by the next run
    return RunInfo(r["id"], r["owner"], status, r["what"], r["started_by"], r["started_at"], r["finished_at"],
                   r["flow_run_id"] or "", r["deployment"] or "", r["api_url"] or "", r["log_path"] or "",
                   r["message"] or "")


class RunRecords:
    """The ``runs``, ``run_progress`` and ``run_log`` tables of one workspace store."""

    def __init__(self, store: Database):
        self.store = store

    # -- the runs ------------------------------------------------------------------------------------------
    def start(self, what: str, started_by: str, *, deployment: str = "", api_url: str = "", log_path: str = "",
              flow_run_id: str = "") -> int:
        """Record a run of this process, after marking runs of ended processes ``crashed``; forget the progress
        and messages of all but the newest ``KEEP_RUNS`` runs."""
        now = time.time()
        with self.store.transaction() as c:
            self.mark_crashed()
            cur = c.execute(
                "INSERT INTO runs(owner, status, what, started_by, started_at, flow_run_id, deployment, api_url, "
                "log_path) VALUES (?,?,?,?,?,?,?,?,?)",
                (current_owner(), Status.RUNNING, what, started_by, now, flow_run_id or None, deployment or None,
                 api_url or None, log_path or None))
            run_id = int(cur.lastrowid)
            c.execute("DELETE FROM run_progress WHERE run_id <= ?", (run_id - KEEP_RUNS,))
            c.execute("DELETE FROM run_log WHERE run_id <= ?", (run_id - KEEP_RUNS,))
        return run_id

    def set_flow_run(self, run_id: int, flow_run_id: str, api_url: str | None = None) -> None:
        with self.store.transaction() as c:
            c.execute("UPDATE runs SET flow_run_id=?, api_url=COALESCE(?, api_url) WHERE id=?",
                      (flow_run_id or None, api_url, run_id))

    def finish(self, run_id: int, status: Status, message: str | None = None) -> None:
        with self.store.transaction() as c:
            c.execute("UPDATE runs SET status=?, finished_at=?, message=? WHERE id=? AND status=?",
                      (status, time.time(), (message or None) and message[:1000], run_id, Status.RUNNING))

    def mark_crashed(self) -> list[int]:
        """Record runs left ``running`` by processes that have ended as ``crashed``; their ids."""
        with self.store.transaction() as c:
            dead = [r[0] for r in c.execute("SELECT id, owner FROM runs WHERE status=?", (Status.RUNNING,))
                    if owner_state(r[1]) == "dead"]
            now = time.time()
            c.executemany("UPDATE runs SET status=?, finished_at=?, "
                          "message=COALESCE(message, 'its process ended without finishing it (killed?)') "
                          "WHERE id=? AND status=?", [(Status.CRASHED, now, i, Status.RUNNING) for i in dead])
        return dead

    def get(self, run_id: int) -> RunInfo | None:
        row = self.store.conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _info(row) if row else None

    def marked_running(self) -> list[RunInfo]:
        """The runs whose row says ``running``, newest first (those whose process ended read ``crashed``)."""
        return [_info(r) for r in self.store.conn.execute("SELECT * FROM runs WHERE status=? ORDER BY id DESC",
                                                          (Status.RUNNING,))]

    def recent(self, limit: int = 20) -> list[RunInfo]:
        return [_info(r) for r in self.store.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))]

    def for_flow_run(self, flow_run_id: str) -> RunInfo | None:
        row = self.store.conn.execute("SELECT * FROM runs WHERE flow_run_id=? ORDER BY id DESC LIMIT 1",
                                      (flow_run_id,)).fetchone()
        return _info(row) if row else None

    # -- progress and messages -----------------------------------------------------------------------------
    def write_progress(self, run_id: int, stages: Iterable[StageLive], lines: Iterable[LogLine] = ()) -> None:
        """Upsert stage rows and append messages, in one transaction."""
        with self.store.transaction() as c:
            c.executemany(
                "INSERT INTO run_progress(run_id, stage, position, state, done, total, failures, batches_done, "
                "batches, rate, message, level, started_at, updated_at, tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(run_id, stage) DO UPDATE SET state=excluded.state, done=excluded.done, "
                "total=excluded.total, failures=excluded.failures, batches_done=excluded.batches_done, "
                "batches=excluded.batches, rate=excluded.rate, message=excluded.message, level=excluded.level, "
                "updated_at=excluded.updated_at, tokens=excluded.tokens",
                [(run_id, s.stage, s.position, s.state, s.done, s.total, s.failures, s.batches_done, s.batches, s.rate,
                  s.message or None, s.level or None, s.started_at, s.updated_at, s.tokens) for s in stages])
            c.executemany("INSERT OR IGNORE INTO run_log(run_id, seq, stage, level, text, at) VALUES (?,?,?,?,?,?)",
                          [(run_id, line.seq, line.stage, line.level, line.text, line.at) for line in lines])

    def progress(self, run_id: int) -> list[StageLive]:
        rows = self.store.conn.execute("SELECT * FROM run_progress WHERE run_id=? ORDER BY position", (run_id,))
        return [StageLive(r["stage"], r["position"], r["state"], r["done"], r["total"], r["failures"],
                          r["batches_done"], r["batches"], r["rate"], r["message"] or "", r["level"] or "info",
                          r["started_at"], r["updated_at"], r["tokens"]) for r in rows]

    def log(self, run_id: int, after: int = 0, limit: int = LOG_LIMIT) -> list[LogLine]:
        rows = self.store.conn.execute("SELECT seq, stage, level, text, at FROM run_log WHERE run_id=? AND seq>? "
                                       "ORDER BY seq LIMIT ?", (run_id, after, limit))
        return [LogLine(r[0], r[1], r[2], r[3], r[4]) for r in rows]
