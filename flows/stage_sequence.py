"""The stages of a run that have work, as stage flows in pipeline order (subflows of the ``pipeline`` flow run),
and the run's summary artifact as they end, however they end. Called by the ``pipeline`` flow, and by
``flows.run_path`` when a deployment's flow run enters the one run path."""
from __future__ import annotations

import logging
import time

from prefect import tags
from prefect.exceptions import TerminationSignal

from flows.artifacts import publish_stage, publish_summary, report_html
from flows.naming import run_tags
from flows.plan import settled_labels, stage_plan
from flows.run_context import RunContext
from flows.runners import no_heartbeats, send_photos, task_runners
from flows.runtime.prefect_api import result
from flows.stage_flows import abandon_flow_run, stage_flow
from pipeline import shutdown
from pipeline.errors import one_line
from pipeline.runs import get_run
from pipeline.stages.outcome import RunOutcome
from pipeline.states import Status

log = logging.getLogger(__name__)


def run_stage_flows(ctx: RunContext, stages: list[str] | None, captioners: list[str] | None, retry_failed: bool,
                    runner: str, dask_address: str | None, flow_run_id: str) -> bool:
    """The stages of the run not settled before Prefect started, each as a stage flow (a subflow of the
    ``pipeline`` flow run); False when the run was cancelled before the last one. The run's summary artifact
    is published at the end, however it ended."""
    t0 = time.perf_counter()
    planned: list[tuple[str, str]] = []
    plan: list[tuple[str, str]] = []
    completed: list[str] = []
    ended = RunOutcome(Status.COMPLETED, runner=runner, flow_run_id=flow_run_id, run_id=ctx.run_id)

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
        ctx.send_photos = runner == "dask" and send_photos(ctx.ws.config.orchestration.send_photos, dask_address)
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
            ended.status = Status.CANCELLED
            ended.error = (f"cancelled after {len(ctx.outcomes)} of {len(planned)} stages; "
                           "finished batches are kept")
            return False
        return True
    except BaseException as exc:
        stopped = ctx.cancel.is_set() or isinstance(exc, (KeyboardInterrupt, TerminationSignal))
        ended.status, ended.error = (Status.CANCELLED if stopped else Status.FAILED), one_line(exc)
        raise
    finally:
        ended.seconds, ended.stages = time.perf_counter() - t0, list(ctx.outcomes)
        _publish_summary(ctx, ended, planned, stages)


def _publish_summary(ctx: RunContext, ended: RunOutcome, plan: list[tuple[str, str]], stages: list[str] | None) -> None:
    """The run's summary artifact (``flows.artifacts``): never fails the run, whatever ended it."""
    try:
        labels = [ctx.stage(name, variant).label for name, variant in plan]
        report = next((ctx.stage(s.name, s.variant) for s in ended.stages
                       if s.name == "report" and s.status == Status.COMPLETED), None)
        run = get_run(ctx.ws.store, ctx.run_id) if ctx.run_id is not None else None
        publish_summary(ctx.ws, ended, ended.flow_run_id or None, planned=labels, requested=stages,
                        started_by=run.started_by if run else "", report=report_html(report) if report else None)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not write the run's summary artifact: %s", one_line(exc))
