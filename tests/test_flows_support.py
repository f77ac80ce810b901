"""Stages and helpers for the flow tests (no tests here).

The stages are real ``Stage`` subclasses that write rows to the workspace store.
They are importable as ``tests.test_flows_support:<Class>`` so that a subprocess
or a Dask worker rebuilds them from (workspace, stage name, target), like any stage.
Besides its outputs, each stage appends to a log table every time it computes an
item, so tests can see how often each item was computed.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.config_file import update_config_file
from pipeline.stages.base import Batch, BatchResult, Stage
from pipeline.stages.ingest import current_split_hash
from pipeline.workspace import Workspace

MODULE = "tests.test_flows_support"
N_IMAGES = 80
N_TARGETS = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flowtest_outputs (stage TEXT NOT NULL, config_hash TEXT NOT NULL, item TEXT NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (stage, config_hash, item));
CREATE TABLE IF NOT EXISTS flowtest_log (stage TEXT NOT NULL, item TEXT NOT NULL, pid INTEGER NOT NULL,
    thread TEXT NOT NULL, at REAL NOT NULL);
"""


def spec(cls: type) -> str:
    return f"{MODULE}:{cls.__name__}"


def demo_data(world: Path, n_targets: int = N_TARGETS) -> dict[str, Any]:
    return {"source": "demo", "path": str(world), "demo_images": N_IMAGES, "demo_seed": 7, "n_targets": n_targets}


def configure(ws: Workspace, **sections: dict[str, Any]) -> None:
    """Edit the workspace's capsearch.toml, as a user would."""
    update_config_file(ws.config_path, sections)
    ws.reload_config()


class RowsStage(Stage):
    """One row per ingested photo in its own table; each batch is written in one transaction."""

    name = "rows-test"
    delay = 0.0                      # seconds of work per batch
    _guard = threading.Lock()
    active = 0                       # batches running now in this process
    max_active = 0                   # the most that ever ran at once
    instances: set[int] = set()      # ids of the stage objects that ran batches

    @classmethod
    def reset(cls) -> None:
        cls.active = cls.max_active = 0
        cls.instances = set()

    def _enter(self) -> None:
        with RowsStage._guard:
            cls = type(self)
            cls.active += 1
            cls.max_active = max(cls.max_active, cls.active)
            cls.instances = cls.instances | {id(self)}

    def _leave(self) -> None:
        with RowsStage._guard:
            type(self).active -= 1

    def _ensure(self) -> None:
        self.store.conn.executescript(_SCHEMA)

    def config(self) -> dict[str, Any]:
        return {"split_hash": current_split_hash(self.store), "version": 1}

    def items(self) -> list[str]:
        return self.store.image_ids()

    def done_items(self) -> set[str]:
        self._ensure()
        rows = self.store.conn.execute("SELECT item FROM flowtest_outputs WHERE stage=? AND config_hash=?",
                                       (self.label, self.config_hash()))
        return {r[0] for r in rows}

    def value(self, item: str) -> str:
        return f"{self.label}:{item}"

    def run_batch(self, batch: Batch, progress=None) -> BatchResult:
        self._ensure()
        self._enter()
        try:
            if self.delay:
                time.sleep(self.delay)
            values = {i: self.value(i) for i in batch.ids}
        finally:
            self._leave()
        now, pid, thread = time.time(), os.getpid(), threading.current_thread().name
        h = self.config_hash()
        with self.store.transaction() as c:
            c.executemany("INSERT INTO flowtest_outputs(stage, config_hash, item, value) VALUES (?,?,?,?) "
                          "ON CONFLICT(stage, config_hash, item) DO UPDATE SET value=excluded.value",
                          [(self.label, h, i, v) for i, v in values.items()])
            c.executemany("INSERT INTO flowtest_log(stage, item, pid, thread, at) VALUES (?,?,?,?,?)",
                          [(self.label, i, pid, thread, now) for i in batch.ids])
        if progress:
            progress.advance(len(batch.ids))
        return BatchResult(done=len(batch.ids))


class SlowRowsStage(RowsStage):
    """Takes a while per batch, so a run can be killed in the middle of the stage."""

    name = "slow-rows-test"
    delay = 0.6


class ParallelRowsStage(RowsStage):
    """A CPU stage whose batches may overlap."""

    name = "parallel-rows-test"
    delay = 0.2


class ModelRowsStage(RowsStage):
    """Uses a "model" through the process-wide model cache, as the real backends do."""

    name = "model-rows-test"
    model_key = "flowtest/model"

    def value(self, item: str) -> str:
        from pipeline.models.cache import get_or_load

        model = get_or_load(self.model_key, lambda: {"weights": object()})
        return f"{id(model['weights'])}:{item}"


class GpuRowsStage(RowsStage):
    """Claims the GPU: its batches must never overlap in one process."""

    name = "gpu-rows-test"
    uses_gpu = True
    delay = 0.1


class ChatStage(RowsStage):
    """A network stage: asks an OpenAI-compatible server (``queries.base_url``) about every target."""

    name = "chat-test"
    network = True

    def items(self) -> list[str]:
        return self.store.image_ids("target")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "model": self.cfg.queries.model, "base_url": self.cfg.queries.base_url}

    def value(self, item: str) -> str:
        from openai import OpenAI

        client = OpenAI(base_url=self.cfg.queries.base_url, api_key="test-key", max_retries=0, timeout=10)
        reply = client.chat.completions.create(model=self.cfg.queries.model,
                                               messages=[{"role": "user", "content": f"describe {item}"}])
        return reply.choices[0].message.content or ""


def outputs(ws: Workspace, label: str | None = None) -> dict[str, str]:
    """item -> value of a test stage's current outputs (every stage when no label is given)."""
    conn = ws.store.conn
    conn.executescript(_SCHEMA)
    sql, args = "SELECT stage, item, value FROM flowtest_outputs", []
    if label:
        sql, args = sql + " WHERE stage=?", [label]
    return {(f"{s}/{i}" if label is None else i): v for s, i, v in conn.execute(sql, args)}


def computed(ws: Workspace, label: str) -> dict[str, int]:
    """item -> how many times the stage computed it."""
    conn = ws.store.conn
    conn.executescript(_SCHEMA)
    return {i: n for i, n in conn.execute("SELECT item, COUNT(*) FROM flowtest_log WHERE stage=? GROUP BY item", (label,))}


def log_rows(ws: Workspace, label: str) -> list[tuple[str, int, str, float]]:
    conn = ws.store.conn
    conn.executescript(_SCHEMA)
    return list(conn.execute("SELECT item, pid, thread, at FROM flowtest_log WHERE stage=? ORDER BY at", (label,)))


def task_runs(flow_run_ids: list[str], expected: int, timeout: float = 30.0) -> list[Any]:
    """The task runs of these flow runs as the Prefect API records them (waits for the recorder)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) >= expected or time.monotonic() > deadline:
                return final
            time.sleep(0.25)


def flow_run(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


class StuckRowsStage(RowsStage):
    """A batch that takes a minute: the run can only stop by abandoning it. Marks in the store when a batch starts."""

    name = "stuck-rows-test"
    delay = 60.0
    started_key = "stuck-rows-test/started"

    def run_batch(self, batch: Batch, progress=None) -> BatchResult:
        self.store.set_meta(self.started_key, batch.index)
        return super().run_batch(batch, progress)


class PacedRowsStage(RowsStage):
    """Batches that take ``CAPSEARCH_TEST_BATCH_SECONDS`` each (1 s by default): a run long enough to watch,
    cancel or race in another process."""

    name = "paced-rows-test"

    @property
    def delay(self) -> float:  # type: ignore[override]
        return float(os.environ.get("CAPSEARCH_TEST_BATCH_SECONDS", "1.0"))
