"""One Prefect flow per stage; every batch of ``Stage.plan()`` is a cached, retriable task.

A stage flow runs ``prepare`` once, plans the batches of every item (so batch
boundaries, and with them the cache keys, stay the same from run to run), submits
each batch (with ``refresh_cache=True`` when the store lacks some of its outputs),
keeps a bounded number of batches in flight so a cancel stops between batches, and
runs ``finalize`` once when every batch succeeded. It records the stage run in
the store and reports progress to the caller and as a Prefect progress artifact.
A stage that does not apply to the workspace (``Stage.applicable``) runs nothing:
its outcome and stage run say "not applicable" with the reason, and the flow run
completes.
"""
from __future__ import annotations

import os
import time
from collections import deque
from functools import partial
from typing import Any

from prefect import Flow, flow
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run as runtime_flow_run
from prefect.states import Cancelled, State

from flows import run_context, shutdown
from flows.artifacts import ProgressArtifact
from flows.run_context import RunContext, StageRef, resolve_stage_class
from flows.runners import submission_window
from flows.tasks import batch_task
from pipeline.stages.base import NOT_APPLICABLE, Stage, record_not_applicable
from pipeline.stages.registry import STAGE_ORDER


def _stage_run_name() -> str:
    params = runtime_flow_run.parameters or {}
    name, target = params.get("stage", "stage"), params.get("target", "")
    label = resolve_stage_class(name).name if ":" in name else name
    return f"{label}:{target}" if target else label


def run_stage_flow(workspace: str, stage: str, target: str = "", retry_failed: bool = False,
                   run_key: str = "") -> dict[str, Any] | State:
    """Run one stage of a workspace as cached batch tasks; returns the stage's outcome."""
    ctx = run_context.context_for(workspace, run_key)
    outcome = execute_stage(ctx, ctx.stage(stage, target), retry_failed)
    if outcome["status"] == "cancelled":
        return Cancelled(message=f"{outcome['stage']}: cancelled; {outcome['ran']} batches finished and kept",
                         data=outcome)
    return outcome


def _new_outcome(st: Stage, flow_run_id: str) -> dict[str, Any]:
    return {"stage": st.label, "name": st.name, "target": st.target, "config_hash": "", "status": "running",
            "batches": 0, "cached": 0, "ran": 0, "unchanged": 0, "done": 0, "failed": 0, "skipped": 0,
            "items": 0, "total": 0, "seconds": 0.0, "messages": [], "error": "", "reason": "",
            "flow_run_id": flow_run_id}


def abandon_flow_run(flow_run_id: str, message: str) -> None:
    """Mark a flow run Cancelled from outside its engine (the process is about to exit; best effort, 2 s)."""
    if not flow_run_id:
        return
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True, httpx_settings={"timeout": 2.0}) as client:
            client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)
    except Exception:  # noqa: BLE001 - the server may be gone already
        pass


def _record_abandoned(st: Stage, run_id: int, outcome: dict[str, Any], signum: int) -> None:
    """A second stop signal: the batches in flight are abandoned; the stage run says so before the exit."""
    message = (f"abandoned on a second {shutdown.signal_name(signum)}: the batches in flight were not finished "
               "(finished batches are kept)")
    st.store.finish_stage_run(run_id, "cancelled", outcome["done"], outcome["failed"], outcome["skipped"], message)
    abandon_flow_run(outcome["flow_run_id"], message)


def execute_stage(ctx: RunContext, st: Stage, retry_failed: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    frc = FlowRunContext.get()
    flow_run_id = str(frc.flow_run.id) if frc and frc.flow_run else ""
    outcome = _new_outcome(st, flow_run_id)
    store = st.store
    run_id: int | None = None
    forget_abandon = None
    try:
        reason = st.applicable()
        if reason:
            record_not_applicable(st, reason, flow_run_id or None)
            outcome.update(status=NOT_APPLICABLE, reason=reason)
            ctx.tracker(st.label, 0).not_applicable(reason)
            return outcome
        st.prepare(ctx.tracker(st.label, 0))
        batches = st.plan(only_missing=False, retry_failed=retry_failed)
        settled = st.settled_items(retry_failed)
        todo = {b.index: tuple(i for i in b.ids if i not in settled) for b in batches}
        total = sum(len(t) for t in todo.values())
        config_hash = st.config_hash()
        outcome.update(config_hash=config_hash, batches=len(batches), items=total,
                       total=sum(len(b.ids) for b in batches))
        sp = ctx.tracker(st.label, total)
        run_id = store.start_stage_run(st.name, config_hash, st.config(), st.target, flow_run_id=flow_run_id or None,
                                       run_id=ctx.run_id)
        forget_abandon = shutdown.add_abandon(partial(_record_abandoned, st, run_id, outcome))
        artifact = ProgressArtifact(st.label, flow_run_id or ctx.key, total) if total else None
        ref = StageRef(str(ctx.ws.root), _spec_name(ctx, st), st.target, config_hash, st.label)
        errors = _run_batches(ctx, st, ref, batches, todo, outcome, sp, artifact, frc)
        if errors:
            outcome["status"] = "failed"
            first = errors[0]
            outcome["error"] = f"{len(errors)} of {len(batches)} batches failed; first: {first}"
            raise first
        if ctx.cancel.is_set() and outcome["ran"] + outcome["cached"] + outcome["unchanged"] < len(batches):
            outcome["status"] = "cancelled"
        else:
            st.finalize(sp)
            outcome["status"] = "completed"
        if artifact is not None:
            artifact.update(sp.done, sp.failures, final=True, total=sp.total)
        reused = outcome["total"] - total
        sp.finish(f"{st.label}: {outcome['done']} done, {outcome['failed']} failed, {reused} reused "
                  f"({outcome['cached']} of {len(batches)} batches cached)")
    except BaseException as exc:
        if outcome["status"] not in ("failed", "cancelled"):
            # Interrupted (Ctrl-C in the main thread, or Prefect's SIGTERM bridge in a deployment run): cancelled.
            outcome["status"] = "cancelled" if isinstance(exc, (KeyboardInterrupt, TerminationSignal)) else "failed"
            outcome["error"] = outcome["error"] or f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if forget_abandon is not None:
            forget_abandon()
        outcome["seconds"] = time.perf_counter() - t0
        if run_id is not None:
            store.finish_stage_run(run_id, outcome["status"], outcome["done"], outcome["failed"], outcome["skipped"],
                                   (outcome["error"] or None) and outcome["error"][:500])
        ctx.outcomes.append(outcome)
    return outcome


def _spec_name(ctx: RunContext, st: Stage) -> str:
    """The name other processes rebuild the stage from (``module:Class`` for stages outside the registry)."""
    for (name, target), obj in ctx.stages.items():
        if obj is st:
            return name
    return st.name


def _run_batches(ctx: RunContext, st: Stage, ref: StageRef, batches: list, todo: dict[int, tuple[str, ...]],
                 outcome: dict[str, Any], sp, artifact: ProgressArtifact | None,
                 frc: FlowRunContext | None) -> list[BaseException]:
    task = batch_task(ctx.ws, st)
    fresh = task.with_options(refresh_cache=True)
    window = submission_window(frc.task_runner if frc else None)
    pending = deque(batches)
    in_flight: list[PrefectFuture[Any]] = []
    errors: list[BaseException] = []
    while pending or in_flight:
        while pending and len(in_flight) < window and not ctx.cancel.is_set():
            batch = pending.popleft()
            missing = todo[batch.index]
            chosen = fresh if missing else task
            in_flight.append(chosen.submit(stage=ref, batch=batch, todo=missing, run_key=ctx.key))
        if ctx.cancel.is_set():
            pending.clear()
        if not in_flight:
            break
        finished = next(as_completed(in_flight))
        in_flight.remove(finished)
        _collect(finished, outcome, sp, errors)
        if artifact is not None:
            artifact.update(sp.done, sp.failures, total=sp.total)
        if ctx.recorder is not None:
            settled = outcome["ran"] + outcome["cached"] + outcome["unchanged"]
            ctx.recorder.batches(st.label, settled, len(batches))
    return errors


def _collect(future: PrefectFuture[Any], outcome: dict[str, Any], sp, errors: list[BaseException]) -> None:
    future.wait()
    state = future.state
    if state.is_cancelled():
        return
    if not state.is_completed():
        try:
            state.result(raise_on_failure=True)
        except BaseException as exc:  # noqa: BLE001 - collected, raised after the other batches
            errors.append(exc)
            return
        errors.append(RuntimeError(f"batch ended in state {state.name}"))
        return
    result = state.result()
    if state.name == "Cached":
        outcome["cached"] += 1
        return
    if not result.get("ran"):
        outcome["unchanged"] += 1
        return
    outcome["ran"] += 1
    for key in ("done", "failed", "skipped"):
        outcome[key] += int(result.get(key, 0))
    outcome["messages"].extend(result.get("messages", [])[: max(0, 200 - len(outcome["messages"]))])
    if result.get("pid") != os.getpid():
        # Ran in another process (a Dask worker): report its progress from here.
        sp.advance(int(result["ran"]), int(result.get("failed", 0)))


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
