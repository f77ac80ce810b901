"""The task that computes a batch anywhere: a ``BatchJob`` in, a ``BatchPayload`` out (``pipeline.compute``).

This is the one piece of capsearch a Dask worker runs. It imports no store and no workspace, opens no
file of the workspace and persists nothing: its result goes back to the flow's process in memory (Prefect
keeps no result of it, so no result folder is needed on the worker), and the flow commits it
(``flows.tasks.run_batch``). A batch that needs nothing computed is never sent (the flow finds that out
from the store). ``device_slot`` keeps one GPU batch at a time per device in a process.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import Task, exponential_backoff

from flows.runtime import prefect_api
from pipeline.compute.jobs import BatchJob, BatchPayload, run_job
from pipeline.errors import CapsearchError

RETRY_JITTER = 0.5

_device_locks: dict[str, threading.Lock] = {}
_device_guard = threading.Lock()


@contextmanager
def device_slot(uses_gpu: bool, device: str) -> Iterator[None]:
    """One GPU batch at a time per device in this process (Dask runs one worker per GPU)."""
    if not uses_gpu:
        yield
        return
    with _device_guard:
        lock = _device_locks.setdefault(str(device), threading.Lock())
    with lock:
        yield


@task(name="compute", persist_result=False, cache_policy=NO_CACHE, task_run_name="compute {job.ref.label} #{job.index}")
def compute_batch(job: BatchJob) -> BatchPayload:
    """Compute one job in whatever process runs this task; progress and messages travel in the payload."""
    with device_slot(job.ref.uses_gpu, str(job.ref.config.runtime.device)):
        return run_job(job)


def retry_unless_user_error(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """Retry network failures; a configuration or data error (an unreachable endpoint that stopped the stage
    included) fails the same way every time."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = prefect_api.result(state, raise_on_failure=False)
        except Exception:  # noqa: BLE001
            return True
    return not isinstance(exc, CapsearchError)


def compute_task(network: bool, retries: int = 0, retry_delay: float = 1.0) -> Task[..., Any]:
    """The compute task for one stage: network stages are retried with backoff and jitter, as their batch
    task is in the flow's process (``flows.tasks.batch_task``)."""
    if not network:
        return compute_batch
    return compute_batch.with_options(retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=retry_delay),
                                      retry_jitter_factor=RETRY_JITTER, retry_condition_fn=retry_unless_user_error)
