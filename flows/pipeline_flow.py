"""The ``pipeline`` flow: the stage flows in pipeline order, for the configured captioners."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from prefect import flow, tags
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.states import Cancelled, State

from flows import run_context
from pipeline import shutdown
from flows.artifacts import publish_summary, report_html
from flows.crashed_runs import mark_crashed_flow_runs
from flows.naming import pipeline_run_name, run_tags
from flows.run_context import RunContext
from flows.runners import no_heartbeats, task_runners
from flows.stage_flows import abandon_flow_run, stage_flow
from flows.workspace_run import claim_workspace, configured_api_url, describe_request, started_by_default
from pipeline.runs import get_run, set_flow_run
from pipeline.errors import ConfigError, one_line
from pipeline.stages.outcome import RunOutcome
from pipeline.stages.registry import STAGE_ORDER, pipeline_stages

log = logging.getLogger(__name__)


def stage_plan(ctx: RunContext, names: list[str] | None, captioners: list[str] | None) -> list[tuple[str, str]]:
    """(stage name, variant) in run order; registered stages in pipeline order, then ``module:Class`` stages."""
    registered = [n for n in (names or []) if ":" not in n]
    custom = [n for n in (names or []) if ":" in n]
    unknown = [n for n in registered if n not in STAGE_ORDER]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGE_ORDER)}")
    plan: list[tuple[str, str]] = []
    if registered or names is None:
        for st in pipeline_stages(ctx.ws, registered or None, captioners):
            ctx.stages.setdefault((st.name, st.variant), st)
            plan.append((st.name, st.variant))
    plan.extend((n, "") for n in custom)
    return plan


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

    ``data_path`` overrides the collection folder for this run (the scheduled run's watched folder).
    Started by ``flows.api.run``, the workspace is claimed already; started any other way (a run of a
    deployment), the flow claims it itself (``flows.workspace_run``): it fails at once when another
    run holds the workspace, or waits for it with ``wait``. ``started_by`` says who asked for the run.
    """
    ctx = run_context.context_for(workspace, run_key)
    frc = FlowRunContext.get()
    flow_run_id = str(frc.flow_run.id) if frc and frc.flow_run else ""
    ctx.flow_run_id = flow_run_id or None     # the stage flows attach the run's result artifacts to it

    def plan(cancel: Any = None) -> dict[str, Any] | State:
        return _run_plan(ctx, workspace, stages, captioners, retry_failed, runner, dask_address, data_path, flow_run_id)

    with ExitStack() as stack:
        if ctx.run_id is not None:           # claimed by flows.api.run, which handles stop signals
            _record_flow_run(ctx, flow_run_id)
            return plan()
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            stack.enter_context(shutdown.stop_on_signals())
        stack.enter_context(_claimed_here(ctx, stages, captioners, retry_failed, started_by, wait, frc))
        _record_flow_run(ctx, flow_run_id)
        if not in_main:
            return plan()
        # A run of a deployment, in the main thread of its own process: the runner that serves it cancels it
        # with SIGTERM. Run the stages in a worker thread, as the CLI does, so that the signal reaches
        # pipeline.shutdown here and stops the run between batches: every stage flow (a subflow) started in
        # this thread would put Prefect's own handler back, which interrupts the batch in flight.
        return shutdown.run_cancellable(plan)


def _record_flow_run(ctx: RunContext, flow_run_id: str) -> None:
    """The run's record names its flow run; flow runs that killed runs left running are marked Crashed."""
    set_flow_run(ctx.ws.store, ctx.run_id, flow_run_id, configured_api_url())
    mark_crashed_flow_runs(ctx.ws)


@contextmanager
def _claimed_here(ctx: RunContext, stages: list[str] | None, captioners: list[str] | None, retry_failed: bool,
                  started_by: str | None, wait: bool, frc: FlowRunContext | None) -> Iterator[None]:
    """A run of a deployment (or of the flow called directly) claims the workspace itself."""
    deployment, who = _deployment_and_starter(frc)
    with ExitStack() as stack:
        claim = stack.enter_context(claim_workspace(ctx, describe_request(stages, captioners, retry_failed),
                                                    started_by or who, wait=wait, deployment=deployment))
        cancelled = False
        try:
            yield
        finally:
            cancelled = ctx.cancel.is_set()
        if cancelled and claim.status is None:
            claim.finish("cancelled", "cancelled; finished batches are kept")


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


def _run_plan(ctx: RunContext, workspace: str, stages: list[str] | None, captioners: list[str] | None,
              retry_failed: bool, runner: str, dask_address: str | None, data_path: str | None,
              flow_run_id: str) -> dict[str, Any] | State:
    if data_path:
        ctx.ws.config.data.path = data_path
    t0 = time.perf_counter()
    plan: list[tuple[str, str]] = []
    completed: list[str] = []
    ended = RunOutcome("completed", runner=runner, flow_run_id=flow_run_id, run_id=ctx.run_id)

    def abandoned(signum: int) -> None:
        abandon_flow_run(flow_run_id, f"abandoned on a second {shutdown.signal_name(signum)} after "
                                      f"{len(completed)} of {len(plan)} stages; finished batches are kept")

    try:
        plan = stage_plan(ctx, stages, captioners)
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
                state = sub(workspace=workspace, stage=name, variant=variant, retry_failed=retry_failed,
                            run_key=ctx.key, return_state=True)
                if state.is_cancelled():
                    break
                state.result(raise_on_failure=True, _sync=True)
                completed.append(st.label)
        if ctx.cancel.is_set() and len(completed) < len(plan):
            ended.status = "cancelled"
            ended.error = f"cancelled after {len(completed)} of {len(plan)} stages; finished batches are kept"
            return Cancelled(message=ended.error)
        return {"stages": completed}
    except BaseException as exc:
        stopped = ctx.cancel.is_set() or isinstance(exc, (KeyboardInterrupt, TerminationSignal))
        ended.status, ended.error = ("cancelled" if stopped else "failed"), one_line(exc)
        raise
    finally:
        ended.seconds, ended.stages = time.perf_counter() - t0, list(ctx.outcomes)
        _publish_summary(ctx, ended, plan, stages)


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
