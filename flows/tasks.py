"""The batch task: computes one ``Stage.plan()`` batch and writes it to the store.

Its parameters are small and picklable: a ``StageRef``, the ``Batch`` (ids and
content hash: the cache key), the ids of the batch still missing from the store,
and the run key. The stage object itself is found in the process (see
``flows.run_context``): in the flow's process it is the run's shared instance, so
models loaded through ``pipeline.models.cache`` stay loaded for every batch; in a
Dask worker it is rebuilt once per process from the reference.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from prefect import task
from prefect.client.schemas.objects import TaskRun
from prefect.states import Cancelled, State
from prefect.tasks import Task, exponential_backoff

from flows import run_context
from flows.cache import batch_cache_policy, result_storage
from flows.run_context import StageRef
from flows.runtime import prefect_api
from pipeline.errors import CapsearchError
from pipeline.stages.base import Batch, BatchCancelled, BatchResult, Stage
from pipeline.workspace import Workspace

RETRY_JITTER = 0.5

_device_locks: dict[str, threading.Lock] = {}
_device_guard = threading.Lock()


@contextmanager
def device_slot(stage: Stage) -> Iterator[None]:
    """One GPU task at a time per device in this process (Dask runs one worker per GPU)."""
    if not stage.uses_gpu:
        yield
        return
    device = str(stage.cfg.runtime.device)
    with _device_guard:
        lock = _device_locks.setdefault(device, threading.Lock())
    with lock:
        yield


def result_dict(result: BatchResult, ran: int) -> dict[str, Any]:
    return {"done": result.done, "failed": result.failed, "skipped": result.skipped,
            "messages": [str(m) for m in result.messages][:50], "ran": ran, "pid": os.getpid(),
            "usage": None if result.usage is None else result.usage.as_dict()}


@task(name="batch", persist_result=True, result_serializer="json", cache_policy=batch_cache_policy(),
      task_run_name="{stage.label} #{batch.index}")
def run_batch(stage: StageRef, batch: Batch, todo: tuple[str, ...] = (), run_key: str = "") -> dict[str, Any] | State:
    """Compute the ``todo`` ids of ``batch`` (the whole batch's content hash is the cache key)."""
    ctx = run_context.lookup(run_key) if run_key else None
    if ctx is not None and ctx.cancel.is_set():
        return Cancelled(message="run cancelled before this batch started")
    if not todo:
        return result_dict(BatchResult(), 0)
    st = ctx.stage(stage.name, stage.variant) if ctx is not None else run_context.worker_stage(stage)
    progress = ctx.trackers.get(stage.label) if ctx is not None else None
    work = Batch(batch.index, tuple(todo), batch.content_hash)
    if ctx is not None:
        st.cancel_event = ctx.cancel
    with device_slot(st):
        if ctx is not None and ctx.cancel.is_set():
            return Cancelled(message="run cancelled before this batch started")
        try:
            result = st.run_batch(work, progress)
        except BatchCancelled as exc:
            return Cancelled(message=str(exc) or "run cancelled in the middle of this batch")
    return result_dict(result, len(todo))


def _retry_unless_user_error(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """Retry network failures; a configuration or data error fails the same way every time."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = prefect_api.result(state, raise_on_failure=False)
        except Exception:  # noqa: BLE001
            return True
    return not isinstance(exc, CapsearchError)


def batch_task(ws: Workspace, stage: Stage) -> Task[..., Any]:
    """The batch task configured for one stage: results in the workspace, retries for network stages."""
    # No task tags: each tag costs API calls per task (Prefect checks tag concurrency limits).
    options: dict[str, Any] = {"result_storage": result_storage(ws)}
    if stage.network:
        orch = ws.config.orchestration      # flow_retries, flow_retry_delay: capsearch.toml or the environment
        options.update(retries=orch.flow_retries,
                       retry_delay_seconds=exponential_backoff(backoff_factor=orch.flow_retry_delay),
                       retry_jitter_factor=RETRY_JITTER, retry_condition_fn=_retry_unless_user_error)
    return run_batch.with_options(**options)
