"""The batch task of the flow's process: computes one ``Stage.plan()`` batch, or commits one computed elsewhere.

Its parameters: a ``StageRef`` and the ``Batch`` (ids and content hash: the cache key), the ids of the
batch still missing from the store, the run session (``flows.run_context.RunContext``, passed as it is:
this task runs only in the flow's process, in a thread of its task runner or in the flow's own thread)
and, for a batch computed by a worker (``flows.compute``), the prepared batch and its payload to commit.
It returns a typed ``BatchReport``. Models loaded through ``pipeline.models.cache`` stay loaded for every
batch of the process.
"""
from __future__ import annotations

import os
from typing import Any

from prefect import task
from prefect.states import Cancelled, State
from prefect.tasks import Task, exponential_backoff

from flows.cache import batch_cache_policy, result_storage
from flows.compute import RETRY_JITTER, device_slot, retry_unless_user_error
from flows.run_context import RunContext, StageRef
from pipeline.compute.jobs import BatchPayload
from pipeline.progress import StageProgress
from pipeline.stages.base import Batch, BatchCancelled, BatchReport, PreparedBatch, Stage
from pipeline.workspace import Workspace


def replay(payload: BatchPayload, progress: StageProgress | None) -> None:
    """A batch computed in another process: the progress it made and what it said, reported from here."""
    if progress is None:
        return
    for text, level in payload.messages:
        progress.message(text, level)
    if payload.advanced or payload.failures or payload.tokens:
        progress.advance(payload.advanced, payload.failures, payload.tokens)


@task(name="batch", persist_result=True, result_serializer="pickle", cache_policy=batch_cache_policy(),
      task_run_name="{stage.label} #{batch.index}")
def run_batch(stage: StageRef, batch: Batch, todo: tuple[str, ...] = (), session: RunContext | None = None,
              computed: tuple[PreparedBatch, BatchPayload] | None = None) -> BatchReport | State:
    """Compute and commit the ``todo`` ids of ``batch`` (the whole batch's content hash is the cache key),
    or commit what a worker computed for them (``computed``)."""
    if session is None:
        raise RuntimeError("the batch task runs in the flow's process and needs its run session")
    if computed is None and session.cancel.is_set():
        return Cancelled(message="run cancelled before this batch started")
    if not todo:
        return BatchReport(ran=0, pid=os.getpid())
    st = session.stage(stage.name, stage.variant)
    progress = session.trackers.get(stage.label)
    if computed is not None:
        prepared, payload = computed
        replay(payload, progress)
        return BatchReport.of(st.commit_payload(prepared, payload, progress), len(todo), payload.pid)
    work = Batch(batch.index, tuple(todo), batch.content_hash)
    st.cancel_event = session.cancel
    with device_slot(bool(st.uses_gpu), str(st.cfg.runtime.device)):
        if session.cancel.is_set():
            return Cancelled(message="run cancelled before this batch started")
        try:
            result = st.run_batch(work, progress)
        except BatchCancelled as exc:
            return Cancelled(message=str(exc) or "run cancelled in the middle of this batch")
    return BatchReport.of(result, len(todo), os.getpid())


def batch_task(ws: Workspace, stage: Stage) -> Task[..., Any]:
    """The batch task configured for one stage: results in the workspace, retries for network stages."""
    # No task tags: each tag costs API calls per task (Prefect checks tag concurrency limits).
    options: dict[str, Any] = {"result_storage": result_storage(ws)}
    if stage.network:
        orch = ws.config.orchestration      # flow_retries, flow_retry_delay: capsearch.toml or the environment
        options.update(retries=orch.flow_retries,
                       retry_delay_seconds=exponential_backoff(backoff_factor=orch.flow_retry_delay),
                       retry_jitter_factor=RETRY_JITTER, retry_condition_fn=retry_unless_user_error)
    return run_batch.with_options(**options)
