"""The one path every run takes, whoever started it (:func:`execute`): the CLI and the TUI through
``flows.api.run``, a deployment's run through the ``pipeline`` flow.

A run claims its workspace (``flows.workspace_run``), settles the stages that have nothing to compute
without Prefect (``flows.plan``), and runs the rest as stage flows (``flows.stage_sequence``): inside the
deployment's flow run it was called from, or by starting the ``pipeline`` flow, which its caller hands in
(``through_prefect``: ``flows.api`` has it; this module imports no flow, so the flow can call it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from flows.run_context import RunContext
from flows.workspace_run import claim_workspace, describe_request
from pipeline.stages.outcome import RunOutcome
from pipeline.states import Status

ThroughPrefect = Callable[[RunContext, "RunRequest", Any, float], RunOutcome]


@dataclass(frozen=True)
class RunRequest:
    """Which stages a run computes, and how."""
    stages: list[str] | None = None         # None: every stage, in pipeline order
    captioners: list[str] | None = None     # None: every enabled captioner
    retry_failed: bool = False
    runner: str = "thread"                  # thread | dask
    dask_address: str | None = None

    def describe(self) -> str:
        return describe_request(self.stages, self.captioners, self.retry_failed)


def execute(ctx: RunContext, request: RunRequest, *, started_by: str | None = None, wait: bool = False,
            on_wait: Callable[[str], None] | None = None, record_progress: bool | None = None,
            deployment: str = "", flow_run_id: str | None = None,
            through_prefect: ThroughPrefect | None = None) -> RunOutcome:
    """The one path of every run: claim the workspace (``flows.workspace_run``), settle what has nothing to
    compute without Prefect (``flows.plan``), run the rest as stage flows, record how the run ended.

    ``flow_run_id``: the ``pipeline`` flow run this is called from (a run of a deployment); the stages then run
    as its subflows. Otherwise, when some stage has work, ``through_prefect(ctx, request, claim, t0)`` starts a
    ``pipeline`` flow run for it (``flows.api``)."""
    from flows.plan import settle_unchanged, stage_plan

    t0 = time.perf_counter()
    with claim_workspace(ctx, request.describe(), started_by, wait=wait, on_wait=on_wait, deployment=deployment,
                         record_progress=record_progress) as claim:
        if flow_run_id is not None:
            record_flow_run(ctx, flow_run_id)
        plan = stage_plan(ctx, request.stages, request.captioners)
        left = settle_unchanged(ctx, plan, request.retry_failed)
        if ctx.cancel.is_set() or (not left and flow_run_id is None):
            # nothing to compute and no flow run: no Prefect. A deployment's run (its flow run exists) goes on
            # below with nothing left, so that its flow run in the dashboard says what it reused.
            status = Status.CANCELLED if left else Status.COMPLETED
            outcome = RunOutcome(status, time.perf_counter() - t0, list(ctx.outcomes), flow_run_id or "",
                                 request.runner, run_id=ctx.run_id)
        elif flow_run_id is not None:
            outcome = _in_flow_run(ctx, request, flow_run_id, t0)
        elif through_prefect is not None:
            outcome = through_prefect(ctx, request, claim, t0)
        else:
            raise RuntimeError("stages have work, and neither a flow run nor a way to start one was given")
        claim.finish(outcome.status, outcome.error)
        return outcome


def record_flow_run(ctx: RunContext, flow_run_id: str) -> None:
    """The run's record names its flow run and the API it reports to; flow runs that killed runs left running
    are marked Crashed."""
    from flows.runtime.crashed_runs import mark_crashed_flow_runs
    from flows.runtime.settings import configured_api_url
    from pipeline.runs import set_flow_run

    set_flow_run(ctx.ws.store, ctx.run_id, flow_run_id, configured_api_url())
    mark_crashed_flow_runs(ctx.ws)


def _in_flow_run(ctx: RunContext, request: RunRequest, flow_run_id: str, t0: float) -> RunOutcome:
    """The stages left, as subflows of the ``pipeline`` flow run this is called from (a deployment's run)."""
    from flows.stage_sequence import run_stage_flows

    finished = run_stage_flows(ctx, request.stages, request.captioners, request.retry_failed, request.runner,
                               request.dask_address, flow_run_id)
    status = Status.COMPLETED if finished else Status.CANCELLED
    return RunOutcome(status, time.perf_counter() - t0, list(ctx.outcomes), flow_run_id, request.runner,
                      run_id=ctx.run_id)
