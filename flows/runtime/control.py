"""Cancelling the run going on in a workspace from any process (``capsearch cancel``, ``x`` in the TUI).

Whoever started it, the run stops after the batches in flight and its stage run says ``cancelled``:

* a run of a Prefect deployment (served by ``capsearch serve``) is cancelled the Prefect way: its flow
  run is set to Cancelling; the runner that serves it sends its process SIGTERM, which the ``pipeline``
  flow turns into "stop between batches" (``pipeline.shutdown``), and Prefect records it Cancelled;
* any other run (``capsearch run`` in a shell, a background run started by the TUI or ``run --detach``)
  gets SIGTERM, which ``pipeline.shutdown`` turns into the same thing. The signal goes to the process the
  run's record names only if it is still that process (same host, pid and start time: a pid reused
  since the run ended is never signalled).
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Callable

from pipeline.errors import CapsearchError
from pipeline.run_owner import owner_state, signal_owner
from pipeline.runs import RunInfo, current_run, get_run, mark_crashed
from pipeline.states import Status
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class CancelRequest:
    how: str                       # 'prefect' | 'signal' | 'none'
    run: RunInfo | None
    message: str


def cancel_flow_run(api_url: str, flow_run_id: str, message: str = "cancelled with capsearch") -> str:
    """Cancel a Prefect flow run: Cancelling when it runs (its runner stops it), Cancelled before it started.

    Returns the state it was set to."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled, Cancelling

    from flows.runtime.prefect_api import client

    with client(api_url, timeout=10.0) as prefect:
        flow_run = prefect.read_flow_run(flow_run_id)
        state_type = flow_run.state.type if flow_run.state else None
        if state_type in (StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED):
            state = Cancelled(message=message)
        elif state_type in (StateType.RUNNING, StateType.CANCELLING):
            state = Cancelling(message=message)
        else:
            return flow_run.state.name if flow_run.state else "unknown"
        result = prefect.set_flow_run_state(flow_run_id, state)
        if str(getattr(result.status, "value", result.status)).upper() != "ACCEPT":
            raise CapsearchError(f"Prefect did not accept cancelling flow run {flow_run_id}: "
                                 f"{getattr(result.details, 'reason', '') or result.status}")
        return state.name


@dataclass(frozen=True)
class FlowRunEnd:
    """How a flow run ended, in capsearch's words (``completed``, ``cancelled``, ``failed``) and Prefect's."""
    status: Status
    message: str


def flow_run_end(api_url: str, flow_run_id: str, timeout: float = 5.0) -> FlowRunEnd | None:
    """How a flow run ended, or None while it has not (or the server did not answer: ask again later)."""
    from flows.runtime.prefect_api import client

    try:
        with client(api_url, timeout=timeout) as prefect:
            state = prefect.read_flow_run(flow_run_id).state
    except Exception:  # noqa: BLE001 - the server may be busy
        return None
    if state is None or not state.is_final():
        return None
    status = (Status.CANCELLED if state.is_cancelled() else Status.COMPLETED if state.is_completed()
              else Status.FAILED)
    return FlowRunEnd(status, state.message or state.name)


def cancel_run(ws: Workspace, run: RunInfo | None = None) -> CancelRequest:
    """Ask the workspace's current run (or ``run``) to stop after its batches in flight."""
    store = ws.store
    run = run or current_run(store)
    if run is None:
        return CancelRequest("none", None, f"no run is going on in {ws.root}")
    errors: list[str] = []
    if run.deployment and run.flow_run_id and run.api_url:
        try:
            cancel_flow_run(run.api_url, run.flow_run_id, "cancelled with capsearch cancel")
            return CancelRequest("prefect", run, f"asked Prefect to cancel flow run {run.flow_run_id} of "
                                                 f"{run.deployment}: it stops after the batches in flight")
        except Exception as exc:  # noqa: BLE001 - fall back to a signal where the process is here
            errors.append(f"Prefect at {run.api_url} could not cancel it ({type(exc).__name__}: {exc})")
    if signal_owner(run.owner, signal.SIGTERM):
        return CancelRequest("signal", run, f"sent SIGTERM to process {run.pid}: the run stops after the batches "
                                            "in flight")
    state = owner_state(run.owner)
    if state == "unknown":
        raise CapsearchError(f"the run is on host {run.host or '?'} (pid {run.pid}): cancel it there"
                             + (f"; {errors[0]}" if errors else ""))
    mark_crashed(store)
    return CancelRequest("none", get_run(store, run.id), f"the run's process {run.pid} has ended already; "
                                                         "it is recorded as crashed")


def wait_for_end(ws: Workspace, run_id: int, timeout: float | None = None, poll: float = 0.5,
                 on_poll: Callable[[RunInfo], None] | None = None) -> RunInfo | None:
    """Wait until run ``run_id`` has ended (or ``timeout`` passed); returns its last record.

    A run has ended when its record says so *and* its process has exited (a run records its end before it
    stops the servers it started and exits: until then it is still stopping). A process on another host
    cannot be watched: its record is all there is."""
    deadline = None if timeout is None else time.monotonic() + timeout
    store = ws.store
    while True:
        run = get_run(store, run_id)
        if run is None or (not run.is_running and owner_state(run.owner) != "alive"):
            return run
        if on_poll is not None:
            on_poll(run)
        if deadline is not None and time.monotonic() > deadline:
            return run
        time.sleep(poll)
