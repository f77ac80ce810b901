"""Prefect flow runs of a killed capsearch run, marked Crashed by the next run of the workspace.

A process ended by SIGKILL, an out-of-memory kill or a power cut cannot tell Prefect that its flow
runs ended: the pipeline flow run and the stage flow run in flight would read Running in the Prefect
UI and in the TUI's Runs screen for good (the open-source server notices dead runs only through
heartbeats and an automation, and capsearch's runs send no heartbeats). The store knows which runs
crashed (their owner process is gone: ``pipeline.runs``); the next pipeline flow run of the workspace
sets those of their flow runs that Prefect still has as running to Crashed, with the reason, and gives a
crashed run's pipeline flow run the summary artifact it could not write (``flows.artifacts``): how far it got,
stage by stage, as the store recorded it.
"""
from __future__ import annotations

import logging
from uuid import UUID

from pipeline.errors import one_line
from pipeline.runs import crashed_flow_run_ids, recent_runs, recorded_outcome
from pipeline.states import Status
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

MESSAGE = "its capsearch process ended without finishing it (killed?); recorded by the next run of the workspace"


def mark_crashed_flow_runs(ws: Workspace) -> int:
    """Set the Prefect flow runs of crashed runs that are still running to Crashed, and write the summaries of
    those that were pipeline flow runs; returns how many flow runs were marked.

    Best effort: a flow run the API does not know (another server's) is left alone, and an API that
    does not answer costs a warning in the log, never the run."""
    store = ws.store
    ids = crashed_flow_run_ids(store)
    if not ids:
        return 0
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    from flows.runtime.prefect_api import client

    unfinished = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]
    marked: list[str] = []
    try:
        with client(timeout=10.0) as prefect:
            stale = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[UUID(i) for i in ids]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished))))
            for flow_run in stale:
                prefect.set_flow_run_state(flow_run.id, Crashed(message=MESSAGE), force=True)
                marked.append(str(flow_run.id))
    except Exception as exc:  # noqa: BLE001 - the history is corrected by a later run
        log.warning("could not mark the flow runs of crashed runs as Crashed in Prefect: %s", one_line(exc))
    if marked:
        _summaries(ws, set(marked))
    return len(marked)


def _summaries(ws: Workspace, marked: set[str]) -> None:
    """The summary of each crashed run whose pipeline flow run was just marked, from the store's record."""
    from flows.artifacts import publish_summary

    for run in recent_runs(ws.store):
        if run.status == Status.CRASHED and run.flow_run_id in marked:
            outcome = recorded_outcome(ws.store, run)
            outcome.error = MESSAGE
            publish_summary(ws, outcome, run.flow_run_id, started_by=run.started_by)
