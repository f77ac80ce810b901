"""Recent Prefect flow runs (the TUI's Runs screen reads them from a worker thread).

From the configured Prefect server's API when there is one (``capsearch server``, ``PREFECT_API_URL``),
otherwise straight from the local Prefect database (``flows.runtime.history``), where every run's history is
kept whether or not a server was up: no server is needed, and none is started."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flows.naming import workspace_tag
from flows.runtime.history import FlowRunRow, read_local_flow_runs, stage_of, workspace_of
from flows.runtime.settings import configured_api_url
from pipeline.errors import CapsearchError, one_line

class FlowRunsUnavailable(CapsearchError):
    """The flow runs could not be read (the server did not answer, the local database is unreadable)."""


@dataclass(frozen=True)
class RecentFlowRuns:
    """The most recent flow runs, newest first, and where they were read from."""

    api_url: str | None                  # the server's API; None: read from the local database
    ui_url: str | None = None
    runs: list[FlowRunRow] = field(default_factory=list)
    database: Path | None = None         # the local database read (no server); None there: Prefect's is not SQLite


def ui_url_for(api_url: str) -> str:
    """The UI of a ``capsearch server`` (from its record), else the API address without ``/api``."""
    try:
        from flows.runtime.settings import read_server_record

        record = read_server_record()
        if record is not None and record.api_url.rstrip("/") == api_url.rstrip("/"):
            return record.ui_url
    except Exception:  # noqa: BLE001
        pass
    return api_url.rstrip("/").removesuffix("/api")


def read_recent_runs(limit: int = 30, timeout: float = 3.0, api_url: str | None = None,
                     workspace: str | None = None) -> RecentFlowRuns:
    """The ``limit`` most recent flow runs from the configured server (else the local database), with ``workspace``
    (its absolute path) only that workspace's; raises ``FlowRunsUnavailable`` naming the server or database and
    the reason. A server is asked for one workspace's runs by its tag (``workspace:<id>``, every run capsearch
    starts carries it), so other workspaces' runs on a busy server cannot crowd them out."""
    # A server this process reports to for a while (a run's, a test harness's) does not count: the server a user
    # configured does (the environment, `capsearch server`, the Prefect profile); else the local database has them
    url = api_url or configured_api_url(in_process=False)
    if not url:
        return read_local_runs(limit, workspace)
    rows: list[FlowRunRow] = []
    try:
        from prefect.client.schemas.filters import FlowFilter, FlowFilterId, FlowRunFilter, FlowRunFilterTags
        from prefect.client.schemas.sorting import FlowRunSort

        from flows.runtime.prefect_api import client

        with client(url, timeout=timeout) as prefect:
            only = None if workspace is None else FlowRunFilter(
                tags=FlowRunFilterTags(all_=[workspace_tag(workspace)]))
            runs = prefect.read_flow_runs(flow_run_filter=only, sort=FlowRunSort.START_TIME_DESC, limit=limit)
            if workspace is not None:      # a tag is the path's digest: keep only the path's own runs
                runs = [r for r in runs if workspace_of(r.parameters) == workspace]
            flow_ids = list({r.flow_id for r in runs})
            flows = prefect.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=flow_ids))) if flow_ids else []
        names = {f.id: f.name for f in flows}
        for r in runs:
            seconds = r.total_run_time.total_seconds() if r.total_run_time else None
            if not seconds and r.start_time and r.end_time:
                seconds = (r.end_time - r.start_time).total_seconds()
            rows.append(FlowRunRow(r.name, names.get(r.flow_id, "?"), r.state_name or "?",
                                   stage_of(r.parameters), r.start_time, seconds, str(r.id),
                                   workspace=workspace_of(r.parameters)))
    except Exception as exc:
        raise FlowRunsUnavailable(f"cannot read flow runs from {url}: {one_line(exc)[:200]}") from exc
    return RecentFlowRuns(url, ui_url_for(url), rows)


def read_local_runs(limit: int = 30, workspace: str | None = None) -> RecentFlowRuns:
    """The most recent flow runs (of ``workspace``, when given) from the local Prefect database (none, with no
    database, when Prefect is set up with a database other than SQLite); raises ``FlowRunsUnavailable`` when it
    cannot be read."""
    from flows.runtime.history import local_database

    path = local_database()
    if path is None:
        return RecentFlowRuns(None)
    try:
        return RecentFlowRuns(None, runs=read_local_flow_runs(limit, path, workspace), database=path)
    except Exception as exc:
        raise FlowRunsUnavailable(f"cannot read the local Prefect database {path}: {one_line(exc)[:200]}") from exc
