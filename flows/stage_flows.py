"""One Prefect flow per stage; every batch of ``Stage.plan()`` is a cached, retriable task.

A stage flow plans the stage with the one planner ``run_stage`` uses too
(``pipeline.stages.plan``: ``prepare`` once, batches of every item, so batch
boundaries, and with them the cache keys, stay the same from run to run), submits
each batch (with ``refresh_cache=True`` when the store lacks some of its outputs),
keeps a bounded number of batches in flight so a cancel stops between batches, and
runs ``finalize`` once when every batch succeeded. It records the stage run with
the one recorder (``pipeline.stages.record``), fills the stage's typed
``StageOutcome`` as batches finish, and reports progress to the caller and as a
Prefect progress artifact. A stage that does not apply to the workspace
(``Stage.applicable``) runs nothing: its outcome and stage run say "not applicable"
with the reason, and the flow run completes.
"""
from __future__ import annotations

import time
from collections import deque
from functools import partial
from typing import Any

from prefect import Flow, flow
from prefect.context import FlowRunContext, TagsContext
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run as runtime_flow_run
from prefect.states import Cancelled, State
from prefect.utilities.annotations import quote

from flows import run_context
from flows.artifacts import ProgressArtifact, publish_stage
from flows.naming import stage_run_name
from flows.runtime import prefect_api
from pipeline import shutdown
from flows.run_context import RunContext, StageRef
from flows.compute import compute_task
from flows.runners import cluster_failure, is_cluster_failure, runs_elsewhere, submission_window
from flows.tasks import batch_task
from pipeline.errors import DiskFullError
from pipeline.stages.base import Batch, BatchReport, PreparedBatch, Stage
from pipeline.stages.outcome import StageOutcome
from pipeline.stages.plan import StagePlan, plan_stage
from pipeline.stages.record import StageRunRecorder
from pipeline.stages.registry import STAGE_ORDER, resolve_stage_class
from pipeline.states import Status


def _stage_run_name() -> str:
    """``<workspace> · caption:vlm-neighbours`` (``flows.naming``)."""
    params = runtime_flow_run.parameters or {}
    name, variant = params.get("stage", "stage"), params.get("variant", "")
    label = resolve_stage_class(name).name if ":" in name else name
    return stage_run_name(str(params.get("workspace", "")), f"{label}:{variant}" if variant else label)


def run_stage_flow(workspace: str, stage: str, variant: str = "", retry_failed: bool = False,
                   run_key: str = "") -> StageOutcome | State:
    """Run one stage of a workspace as cached batch tasks; returns the stage's outcome."""
    ctx = run_context.context_for(workspace, run_key)
    # The stage's flow run was created with the run's tags (workspace, profile: ``flows.pipeline_flow``); its batch
    # tasks get none: the dashboard filters flow runs, and a tagged task run makes Prefect take a concurrency slot
    # for its tags (an API request, cached 5 s while no limit exists), so a concurrency limit someone puts on the
    # workspace's tag would throttle the batches.
    with TagsContext(current_tags=set()):
        outcome = execute_stage(ctx, ctx.stage(stage, variant), retry_failed)
    if outcome.status == Status.CANCELLED:
        return Cancelled(message=f"{outcome.stage}: cancelled; {outcome.ran} batches finished and kept",
                         data=outcome)
    return outcome


def abandon_flow_run(flow_run_id: str, message: str) -> None:
    """Mark a flow run Cancelled from outside its engine (the process is about to exit; best effort, 2 s)."""
    if not flow_run_id:
        return
    try:
        with prefect_api.client(timeout=2.0) as client:
            client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)
    except Exception:  # noqa: BLE001 - the server may be gone already
        pass


def _record_abandoned(recorder: StageRunRecorder, outcome: StageOutcome, why: shutdown.Abandon) -> None:
    """The batches in flight are abandoned (a second stop signal, the Prefect server's death): the stage run
    says so before the exit, and its flow run where Prefect can still be told."""
    recorder.abandon(outcome, why.message, why.status)
    if why.api_alive:
        abandon_flow_run(outcome.flow_run_id, why.message)


def execute_stage(ctx: RunContext, st: Stage, retry_failed: bool = False) -> StageOutcome:
    t0 = time.perf_counter()
    frc = FlowRunContext.get()
    flow_run_id = str(frc.flow_run.id) if frc and frc.flow_run else ""
    outcome = StageOutcome.of(st, flow_run_id)
    recorder = StageRunRecorder(st, flow_run_id, ctx.run_id)
    forget_abandon = None
    plan: StagePlan | None = None
    try:
        plan = plan_stage(st, ctx.tracker(st.label, 0), retry_failed)
        if plan.not_applicable:
            recorder.not_applicable(plan.not_applicable)
            outcome.not_applicable(plan.not_applicable)
            ctx.tracker(st.label, 0).not_applicable(plan.not_applicable)
            return outcome
        outcome.planned(plan)
        sp = ctx.tracker(st.label, plan.items)
        recorder.start(plan.config_hash)
        forget_abandon = shutdown.add_abandon(partial(_record_abandoned, recorder, outcome))
        artifact = ProgressArtifact(st.label, plan.items) if plan.items else None
        ref = StageRef(str(ctx.ws.root), _spec_name(ctx, st), st.variant, plan.config_hash, st.label)
        errors = _run_batches(ctx, st, ref, plan, outcome, sp, artifact, frc)
        if errors:
            outcome.status = Status.FAILED
            first = next((e for e in errors if isinstance(e, DiskFullError)), errors[0])
            outcome.error = (outcome.stopped_by_full_disk(first) if isinstance(first, DiskFullError) else
                             f"{len(errors)} of {len(plan.batches)} batches failed; first: {first}")
            raise first
        if ctx.cancel.is_set() and outcome.settled_batches < len(plan.batches):
            outcome.status = Status.CANCELLED
        else:
            st.finalize(sp)
            outcome.status = Status.COMPLETED
        if artifact is not None:
            artifact.update(sp.done, sp.failures, final=True, total=sp.total)
        outcome.seconds = time.perf_counter() - t0     # the finish line's rates (photos/s, tokens/s) use it
        sp.finish(outcome.finish_message(with_cache=True))
    except BaseException as exc:
        # Interrupted (Ctrl-C in the main thread, or Prefect's SIGTERM bridge in a deployment run): cancelled.
        outcome.interrupted(exc, cancelled=isinstance(exc, (KeyboardInterrupt, TerminationSignal)))
        raise
    finally:
        if forget_abandon is not None:
            forget_abandon()
        outcome.seconds = time.perf_counter() - t0
        recorder.finish(outcome)
        ctx.outcomes.append(outcome)
        publish_stage(st, outcome, plan, ctx.flow_run_id)
    return outcome


def _spec_name(ctx: RunContext, st: Stage) -> str:
    """The name other processes rebuild the stage from (``module:Class`` for stages outside the registry)."""
    for (name, _variant), obj in ctx.stages.items():
        if obj is st:
            return name
    return st.name


def _run_batches(ctx: RunContext, st: Stage, ref: StageRef, plan: StagePlan, outcome: StageOutcome, sp,
                 artifact: ProgressArtifact | None, frc: FlowRunContext | None) -> list[BaseException]:
    """Every batch with a bounded number in flight. Where the stage's batches go to a cluster, a batch with
    something missing is prepared here (its job read from the store), computed by a worker (``flows.compute``)
    and committed here when its payload arrives; a batch with nothing missing never leaves this process."""
    loop = _BatchLoop(ctx, st, ref, plan, outcome, sp, artifact, frc.task_runner if frc else None)
    try:
        loop.drain()
    except Exception as exc:
        if loop.remote and is_cluster_failure(exc):
            raise cluster_failure(exc, loop.runner) from exc
        raise
    if loop.remote:
        return [cluster_failure(e, loop.runner) if is_cluster_failure(e) else e for e in loop.errors]
    return loop.errors


class _BatchLoop:
    def __init__(self, ctx: RunContext, st: Stage, ref: StageRef, plan: StagePlan, outcome: StageOutcome, sp,
                 artifact: ProgressArtifact | None, runner: Any):
        self.ctx, self.st, self.ref, self.plan, self.outcome, self.sp, self.artifact = ctx, st, ref, plan, outcome, sp, artifact
        self.runner = runner
        self.task = batch_task(ctx.ws, st)
        self.fresh = self.task.with_options(refresh_cache=True)
        self.remote = st.remote and runs_elsewhere(runner)
        self.compute = _compute_task(ctx, st) if self.remote else None
        self.window = submission_window(runner)
        self.session = quote(ctx)
        self.pending = deque(plan.batches)
        self.in_flight: dict[PrefectFuture[Any], tuple[Batch, tuple[str, ...], PreparedBatch | None]] = {}
        self.errors: list[BaseException] = []

    def settled(self) -> None:
        if self.artifact is not None:
            self.artifact.update(self.sp.done, self.sp.failures, total=self.sp.total)
        if self.ctx.recorder is not None:
            self.ctx.recorder.batches(self.st.label, self.outcome.settled_batches, len(self.plan.batches))

    def submit(self, batch: Batch) -> None:
        missing = self.plan.todo[batch.index]
        if not self.remote:
            chosen = self.fresh if missing else self.task
            future = chosen.submit(stage=self.ref, batch=batch, todo=missing, session=self.session)
            self.in_flight[future] = (batch, missing, None)
        elif missing:
            work = Batch(batch.index, missing, batch.content_hash)
            prepared = self.st.prepare_batch(work, self.sp, self.ctx.send_photos)
            self.in_flight[self.compute.submit(job=prepared.job)] = (batch, missing, prepared)
        else:   # the cache record (or nothing to do) is found here: the batch is never sent
            _collect(self.task(stage=self.ref, batch=batch, todo=(), session=self.session, return_state=True),
                     self.outcome, self.errors)
            self.settled()

    def drain(self) -> None:
        ctx = self.ctx
        while self.pending or self.in_flight:
            while self.pending and len(self.in_flight) < self.window and not ctx.cancel.is_set():
                self.submit(self.pending.popleft())
            if ctx.cancel.is_set():
                self.pending.clear()
            if not self.in_flight:
                break
            finished = next(as_completed(list(self.in_flight)))
            batch, missing, prepared = self.in_flight.pop(finished)
            finished.wait()
            state = finished.state
            if prepared is not None and state.is_completed():
                # the single writer: the payload is committed here, one transaction, as the thread runner does
                payload = prefect_api.result(state)
                state = self.fresh(stage=self.ref, batch=batch, todo=missing, session=self.session,
                                   computed=quote((prepared, payload)), return_state=True)
            _collect(state, self.outcome, self.errors)
            if self.errors and isinstance(self.errors[-1], DiskFullError):
                self.pending.clear()     # every later batch would fail the same way: stop at once, say it once
            self.settled()


def _compute_task(ctx: RunContext, st: Stage):  # type: ignore[no-untyped-def]
    orch = ctx.ws.config.orchestration
    return compute_task(bool(st.network), orch.flow_retries, orch.flow_retry_delay)


def _collect(state: State, outcome: StageOutcome, errors: list[BaseException]) -> None:
    if state.is_cancelled():
        return
    if not state.is_completed():
        try:
            prefect_api.result(state)
        except BaseException as exc:  # noqa: BLE001 - collected, raised after the other batches
            errors.append(exc)
            return
        errors.append(RuntimeError(f"batch ended in state {state.name}"))
        return
    report: BatchReport = prefect_api.result(state)
    if state.name == "Cached":
        outcome.cached += 1
    elif not report.ran:
        outcome.unchanged += 1
    else:
        outcome.add_result(report)


def _make_flow(name: str) -> Flow[..., Any]:
    return flow(run_stage_flow, name=f"capsearch-{name}", flow_run_name=_stage_run_name, persist_result=False,
                log_prints=False, description=f"capsearch stage '{name}': every batch a cached, retriable task")


STAGE_FLOWS: dict[str, Flow[..., Any]] = {name: _make_flow(name) for name in STAGE_ORDER}
_custom_flows: dict[str, Flow[..., Any]] = {}


def stage_flow(name: str) -> Flow[..., Any]:
    """The flow of a registered stage, or of a ``module:Class`` stage (named after the class's ``name``)."""
    if name in STAGE_FLOWS:
        return STAGE_FLOWS[name]
    cls_name = resolve_stage_class(name).name
    if cls_name not in _custom_flows:
        _custom_flows[cls_name] = _make_flow(cls_name)
    return _custom_flows[cls_name]
