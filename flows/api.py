"""What the CLI and the TUI call to run stages: every call is a Prefect run of the ``pipeline`` flow."""
from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import Any, Callable

import flows  # noqa: F401 - applies the Prefect settings before Prefect is imported
from pipeline.progress import ProgressCallback
from pipeline.stages.outcome import RunOutcome
from pipeline.workspace import Workspace


def run(ws: Workspace, stages: list[str] | None = None, captioners: list[str] | None = None, *,
        progress: ProgressCallback | None = None, retry_failed: bool = False, runner: str | None = None,
        dask_address: str | None = None, cancel: threading.Event | None = None, wait: bool = False,
        on_wait: Callable[[str], None] | None = None, started_by: str | None = None,
        record_progress: bool | None = None) -> RunOutcome:
    """Run stages (default: all, in pipeline order) as the ``pipeline`` flow and return what happened
    (a ``RunOutcome`` holding each stage's ``StageOutcome``, as the stage flows filled them).

    ``progress`` receives ``ProgressEvent``s from whichever thread runs a batch. Setting
    ``cancel`` stops the run between batches; finished batches stay in the store and the
    run is recorded as cancelled. A stop signal handled by ``pipeline.shutdown`` (SIGTERM,
    SIGINT, SIGHUP) sets it too. Call it from a worker thread where signals matter
    (``shutdown.run_cancellable``): in the main thread Prefect's own SIGTERM handler would
    crash the flow run instead. ``runner`` is ``thread`` or ``dask`` (default: the
    workspace's ``orchestration.runner``); with ``dask`` and no ``dask_address`` (nor
    ``orchestration.dask_address``) a local cluster is started. A stage that fails
    raises its error after recording the run as failed.

    One run per workspace (``flows.workspace_run``): when another run holds the workspace this
    raises ``WorkspaceBusy`` naming it, before Prefect starts, or with ``wait`` waits for it to end
    (``on_wait(description)`` is called once then). ``started_by`` says who started the run (default:
    the user and this process's command); the run and its stages' live progress are recorded in the
    store (``record_progress=False``, or ``CAPSEARCH_RECORD_PROGRESS=0``, leaves the progress out).
    """
    from flows import run_context
    from flows.workspace_run import claim_workspace, describe_request

    ctx = run_context.open_run(ws, progress, cancel)
    try:
        with claim_workspace(ctx, describe_request(stages, captioners, retry_failed), started_by, wait=wait,
                             on_wait=on_wait, record_progress=record_progress) as claim:
            outcome = _run_pipeline(ctx, stages, captioners, retry_failed, runner, dask_address)
            claim.finish(outcome.status, outcome.error)
            return outcome
    finally:
        run_context.close_run(ctx.key)


def _run_pipeline(ctx: Any, stages: list[str] | None, captioners: list[str] | None, retry_failed: bool,
                  runner: str | None, dask_address: str | None) -> RunOutcome:
    from prefect import tags

    from flows.naming import run_tags
    from flows.pipeline_flow import pipeline
    from flows.runners import check_runner
    from flows.server import api_server, use_watched_temporary_server
    from flows.runners import no_heartbeats

    use_watched_temporary_server()
    orch = ctx.ws.config.orchestration
    chosen = check_runner(runner or orch.runner)
    address = dask_address or orch.dask_address or None
    t0 = time.perf_counter()
    with ExitStack() as stack:
        if chosen == "dask":
            stack.enter_context(api_server())
        stack.enter_context(no_heartbeats())
        stack.enter_context(tags(*run_tags(ctx.ws)))    # the flow run's tags: its workspace and profile
        state = pipeline(workspace=str(ctx.ws.root), stages=list(stages) if stages else None,
                         captioners=list(captioners) if captioners else None, retry_failed=retry_failed,
                         runner=chosen, dask_address=address, run_key=ctx.key, return_state=True)
    outcome = RunOutcome("completed", time.perf_counter() - t0, list(ctx.outcomes),
                         str(state.state_details.flow_run_id or ""), chosen, run_id=ctx.run_id)
    if state.is_cancelled():
        outcome.status, outcome.error = "cancelled", state.message or ""
        return outcome
    # _sync: where the calling thread runs an event loop (a notebook, an async test) Prefect would hand back a
    # coroutine instead, never awaited, and a failed run would read as completed.
    state.result(raise_on_failure=True, _sync=True)
    return outcome
