"""What the CLI and the TUI call to run stages (:func:`run`).

A run takes the one path every run takes (``flows.run_path.execute``): it claims its workspace, settles the
stages that have nothing to compute without Prefect (``flows.plan``), and, for the rest, this module starts
the ``pipeline`` flow, reporting to the configured Prefect server or to the shared local one
(``flows.runtime.server.prefect_api``), which it watches (``flows.runtime.server_watch``). A run with
nothing to compute imports no Prefect and starts no server.
"""
from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import Any, Callable

from flows import run_context
from flows.run_context import RunContext
from flows.run_path import RunRequest, execute
from flows.runners import check_runner
from flows.runtime.settings import apply_settings
from pipeline import shutdown
from pipeline.progress import ProgressCallback
from pipeline.stages.outcome import RunOutcome
from pipeline.states import Status
from pipeline.workspace import Workspace

def run(ws: Workspace, stages: list[str] | None = None, captioners: list[str] | None = None, *,
        progress: ProgressCallback | None = None, retry_failed: bool = False, runner: str | None = None,
        dask_address: str | None = None, cancel: threading.Event | None = None, wait: bool = False,
        on_wait: Callable[[str], None] | None = None, started_by: str | None = None,
        record_progress: bool | None = None) -> RunOutcome:
    """Run stages (default: all, in pipeline order) and return what happened (a ``RunOutcome`` holding each
    stage's ``StageOutcome``).

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
    apply_settings()      # this is an entry point for code that runs stages itself (idempotent)
    orch = ws.config.orchestration
    request = RunRequest(list(stages) if stages else None, list(captioners) if captioners else None, retry_failed,
                         check_runner(runner or orch.runner), dask_address or orch.dask_address or None)
    ctx = run_context.open_run(ws, progress, cancel)
    try:
        return execute(ctx, request, started_by=started_by, wait=wait, on_wait=on_wait,
                       record_progress=record_progress, through_prefect=_through_prefect)
    finally:
        run_context.close_run(ctx.key)


def _through_prefect(ctx: RunContext, request: RunRequest, claim: Any, t0: float) -> RunOutcome:
    """Start the ``pipeline`` flow for the stages left, reporting to a Prefect API this run watches."""
    from flows.runtime.server import prefect_api
    from flows.runtime.server_watch import PrefectServerGone, ServerWatch

    def died(what: str) -> None:
        if shutdown.handling_signals():      # the CLI or a background run: end now, say it once
            shutdown.abandon(shutdown.Abandon.failure(what, api_alive=False))
        ctx.cancel.set()                      # a library caller: stop between batches; raised below

    with prefect_api(ctx.ws.config.orchestration.server_idle, ctx.cancel) as api:
        watch = ServerWatch(api.url, api.owner, on_death=died)
        try:
            with watch:
                outcome = _run_pipeline(ctx, request, t0)
        except Exception:
            if watch.check() is None:
                raise
            outcome = None
        if watch.death is not None:
            claim.finish(Status.FAILED, f"{watch.death}; finished batches are kept")
            raise PrefectServerGone(f"{watch.death}; finished batches are kept (run again to go on)") from None
    return outcome


def _run_pipeline(ctx: RunContext, request: RunRequest, t0: float) -> RunOutcome:
    from prefect import tags

    from flows.naming import run_tags
    from flows.pipeline_flow import pipeline
    from flows.runners import no_heartbeats
    from flows.runtime.prefect_api import result

    with ExitStack() as stack:
        stack.enter_context(no_heartbeats())
        stack.enter_context(tags(*run_tags(ctx.ws)))    # the flow run's tags: its workspace and profile
        state = pipeline(workspace=str(ctx.ws.root), stages=request.stages, captioners=request.captioners,
                         retry_failed=request.retry_failed, runner=request.runner,
                         dask_address=request.dask_address, run_key=ctx.key, return_state=True)
    outcome = RunOutcome(Status.COMPLETED, time.perf_counter() - t0, list(ctx.outcomes),
                         str(state.state_details.flow_run_id or ""), request.runner, run_id=ctx.run_id)
    if state.is_cancelled():
        outcome.status, outcome.error = Status.CANCELLED, state.message or ""
        return outcome
    result(state)      # a failed run raises its error here
    return outcome
