"""The ``pipeline`` flow: the stage flows in pipeline order, for the configured captioners."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prefect import flow, tags
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.states import Cancelled, State

from flows import run_context
from flows.api import RunRequest, execute, record_flow_run
from flows.artifacts import publish_stage, publish_summary, report_html
from flows.naming import pipeline_run_name, run_tags
from flows.plan import settled_labels, stage_plan
from flows.run_context import RunContext
from flows.runners import no_heartbeats, task_runners
from flows.runtime.prefect_api import result
from flows.runtime.settings import apply_settings
from flows.stage_flows import abandon_flow_run, stage_flow
from flows.workspace_run import started_by_default
from pipeline import shutdown
from pipeline.errors import one_line
from pipeline.runs import get_run
from pipeline.stages.outcome import RunOutcome
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)


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
    deployment), the flow takes the path every run takes (``flows.api.execute``) with its own flow run:
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
    if outcome.status == "cancelled":
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


def run_stage_flows(ctx: RunContext, stages: list[str] | None, captioners: list[str] | None, retry_failed: bool,
                    runner: str, dask_address: str | None, flow_run_id: str) -> bool:
    """The stages of the run not settled before Prefect started, each as a stage flow (a subflow of the
    ``pipeline`` flow run); False when the run was cancelled before the last one. The run's summary artifact
    is published at the end, however it ended."""
    t0 = time.perf_counter()
    planned: list[tuple[str, str]] = []
    plan: list[tuple[str, str]] = []
    completed: list[str] = []
    ended = RunOutcome("completed", runner=runner, flow_run_id=flow_run_id, run_id=ctx.run_id)

    def abandoned(why: shutdown.Abandon) -> None:
        if why.api_alive:
            abandon_flow_run(flow_run_id, f"{why.message} (after {len(completed)} of {len(plan)} stages)")

    try:
        planned = stage_plan(ctx, stages, captioners)
        settled = settled_labels(ctx)
        plan = [(n, v) for n, v in planned if ctx.stage(n, v).label not in settled]
        for outcome in ctx.outcomes:     # stages settled before Prefect: their results, reused, on this flow run
            if outcome.stage in settled:
                publish_stage(ctx.stage(outcome.name, outcome.variant), outcome, None, flow_run_id)
        threads = ctx.ws.config.orchestration.flow_threads
        # The stage flow runs are created with the run's tags (workspace, profile), as the pipeline's own flow run
        # (flows.api, or its deployment); their batch tasks are not (flows.stage_flows).
        with (tags(*run_tags(ctx.ws)), shutdown.on_abandon(abandoned),
              task_runners(runner, dask_address, threads) as runner_for, no_heartbeats()):
            for name, variant in plan:
                if ctx.cancel.is_set():
                    break
                st = ctx.stage(name, variant)
                sub = stage_flow(name).with_options(task_runner=runner_for(st))
                state = sub(workspace=str(ctx.ws.root), stage=name, variant=variant, retry_failed=retry_failed,
                            run_key=ctx.key, return_state=True)
                if state.is_cancelled():
                    break
                result(state)
                completed.append(st.label)
        if ctx.cancel.is_set() and len(completed) < len(plan):
            ended.status = "cancelled"
            ended.error = (f"cancelled after {len(ctx.outcomes)} of {len(planned)} stages; "
                           "finished batches are kept")
            return False
        return True
    except BaseException as exc:
        stopped = ctx.cancel.is_set() or isinstance(exc, (KeyboardInterrupt, TerminationSignal))
        ended.status, ended.error = ("cancelled" if stopped else "failed"), one_line(exc)
        raise
    finally:
        ended.seconds, ended.stages = time.perf_counter() - t0, list(ctx.outcomes)
        _publish_summary(ctx, ended, planned, stages)


def _publish_summary(ctx: RunContext, ended: RunOutcome, plan: list[tuple[str, str]], stages: list[str] | None) -> None:
    """The run's summary artifact (``flows.artifacts``): never fails the run, whatever ended it."""
    try:
        labels = [ctx.stage(name, variant).label for name, variant in plan]
        report = next((ctx.stage(s.name, s.variant) for s in ended.stages
                       if s.name == "report" and s.status == "completed"), None)
        run = get_run(ctx.ws.store, ctx.run_id) if ctx.run_id is not None else None
        publish_summary(ctx.ws, ended, ended.flow_run_id or None, planned=labels, requested=stages,
                        started_by=run.started_by if run else "", report=report_html(report) if report else None)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not write the run's summary artifact: %s", one_line(exc))
