"""The ``pipeline`` flow: the stage flows in pipeline order, for the configured captioners."""
from __future__ import annotations

import threading
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.states import Cancelled, State

from flows import run_context
from flows.naming import pipeline_run_name
from flows.plan import stage_plan
from flows.run_context import RunContext
from flows.run_path import RunRequest, execute, record_flow_run
from flows.runtime.settings import apply_settings
from flows.stage_sequence import run_stage_flows
from flows.workspace_run import started_by_default
from pipeline import shutdown
from pipeline.stages.outcome import RunOutcome
from pipeline.states import Status
from pipeline.workspace import Workspace

def _run_name() -> str:
    """``<workspace> · pipeline`` (``flows.naming``; the TUI's Runs screen shows the same names)."""
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    return pipeline_run_name(str(params.get("workspace", "")) or "workspace", params.get("stages"))


@flow(name="capsearch-pipeline", flow_run_name=_run_name, persist_result=False, log_prints=False,
      description="capsearch: ingest, embed, neighbours, prompts, captions, caption embeddings, queries, evaluation, report")
def pipeline(workspace: str, stages: list[str] | None = None, captioners: list[str] | None = None,
             retry_failed: bool = False, runner: str = "thread", dask_address: str | None = None,
             data_path: str | None = None, run_key: str = "", started_by: str | None = None,
             wait: bool = False) -> dict[str, Any] | State:
    """Run the stages of a workspace in order; each stage is its own flow run with batch tasks.

    Started by ``flows.api`` (``run_key`` names its run), the workspace is claimed already and the stages
    with nothing to compute are settled: the flow runs the others. Started any other way (a run of a
    deployment), the flow takes the path every run takes (``flows.run_path.execute``) with its own flow run:
    it fails at once when another run holds the workspace, or waits for it with ``wait``.
    ``data_path`` overrides the collection folder for this run (the scheduled run's watched folder);
    ``started_by`` says who asked for the run.
    """
    apply_settings()        # the entry point of a deployment's run (idempotent when flows.api started it)
    frc = FlowRunContext.get()
    flow_run_id = str(frc.flow_run.id) if frc and frc.flow_run else ""
    ctx = run_context.lookup(run_key) if run_key else None
    if ctx is not None:                  # started by flows.api, which claimed the workspace and handles signals
        ctx.flow_run_id = flow_run_id or None     # the stage flows attach the run's result artifacts to it
        record_flow_run(ctx, flow_run_id)
        if not run_stage_flows(ctx, stages, captioners, retry_failed, runner, dask_address, flow_run_id):
            return Cancelled(message=_cancelled_message(ctx, stages, captioners))
        return {"stages": [o.stage for o in ctx.outcomes]}
    ws = Workspace(workspace)
    if data_path:
        ws.config.data.path = data_path
    deployment, who = _deployment_and_starter(frc)
    request = RunRequest(stages, captioners, retry_failed, runner, dask_address)

    def whole_run(cancel: Any = None) -> RunOutcome:
        ctx = run_context.open_run(ws, cancel=cancel)
        ctx.flow_run_id = flow_run_id or None
        try:
            return execute(ctx, request, started_by=started_by or who, wait=wait, deployment=deployment,
                           flow_run_id=flow_run_id)
        finally:
            run_context.close_run(ctx.key)

    if threading.current_thread() is threading.main_thread():
        # A run of a deployment, in the main thread of its own process: the runner that serves it cancels it
        # with SIGTERM. Run the stages in a worker thread, as the CLI does, so that the signal reaches
        # flows.runtime.shutdown here and stops the run between batches: every stage flow (a subflow) started in
        # this thread would put Prefect's own handler back, which interrupts the batch in flight.
        with shutdown.stop_on_signals():
            outcome = shutdown.run_cancellable(whole_run)
    else:
        outcome = whole_run()
    if outcome.status == Status.CANCELLED:
        return Cancelled(message=f"cancelled after {len(outcome.stages)} stages; finished batches are kept")
    return {"stages": [o.stage for o in outcome.stages]}


def _cancelled_message(ctx: RunContext, stages: list[str] | None, captioners: list[str] | None) -> str:
    return (f"cancelled after {len(ctx.outcomes)} of {len(stage_plan(ctx, stages, captioners))} stages; "
            "finished batches are kept")


def _deployment_and_starter(frc: FlowRunContext | None) -> tuple[str, str]:
    """The deployment this flow run belongs to (``flow/deployment``) and who started it, in words."""
    try:
        from prefect.runtime import deployment as runtime_deployment

        name = runtime_deployment.name or ""
    except Exception:  # noqa: BLE001
        name = ""
    deployment = f"capsearch-pipeline/{name}" if name else ""
    flow_run = frc.flow_run if frc else None
    if flow_run is not None and getattr(flow_run, "auto_scheduled", False):
        return deployment, f"the schedule of {deployment or 'a deployment'}"
    if deployment:
        return deployment, f"a run of {deployment} (Prefect UI or API)"
    return deployment, started_by_default()
