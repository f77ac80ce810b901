"""Recent Prefect flow runs for the Runs screen (called from a worker thread).

From the configured Prefect server's API when there is one (``capsearch server``, ``PREFECT_API_URL``),
otherwise straight from the local Prefect database (``flows.history``), where every run's history is
kept whether or not a server was up: no server is needed, and none is started."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from flows.history import FlowRunRow, read_local_flow_runs, stage_of

LOCAL_NOTE = ("Flow runs from the local Prefect database ({path}); `capsearch server` shows the same runs in "
              "the Prefect UI.")
NO_DATABASE = ("No Prefect flow runs recorded yet (no local Prefect database); `capsearch server` shows runs in the "
               "Prefect UI once there are some.")


@dataclass
class PrefectRuns:
    api_url: str | None                  # None: read from the local database
    ui_url: str | None = None
    runs: list[FlowRunRow] = field(default_factory=list)
    error: str = ""
    database: str = ""                   # the local database read (no server)


def configured_api_url() -> str | None:
    """The Prefect server runs report to: PREFECT_API_URL from the environment (``flows`` sets it while a
    ``capsearch server`` is running), else from the active Prefect profile; None when neither sets it.

    A temporary server that Prefect starts inside this process for a run does not count: it keeps no
    history once the app exits."""
    import flows  # noqa: F401 - applies capsearch's Prefect settings (the running server's address)

    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    try:
        from prefect.settings import PREFECT_API_URL, load_current_profile

        return load_current_profile().settings.get(PREFECT_API_URL) or None
    except Exception:  # noqa: BLE001 - no usable Prefect profile: treat as not configured
        return None


def ui_url_for(api_url: str) -> str:
    """The UI of a ``capsearch server`` (from its record), else the API address without ``/api``."""
    try:
        from flows.settings import read_server_record

        record = read_server_record()
        if record is not None and record.api_url.rstrip("/") == api_url.rstrip("/"):
            return record.ui_url
    except Exception:  # noqa: BLE001
        pass
    return api_url.rstrip("/").removesuffix("/api")


def read_recent_runs(limit: int = 30, timeout: float = 3.0, api_url: str | None = None) -> PrefectRuns:
    """The ``limit`` most recent flow runs from the configured server; never raises."""
    url = api_url or configured_api_url()
    if not url:
        return read_local_runs(limit)
    result = PrefectRuns(url, ui_url_for(url))
    try:
        import httpx
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowFilter, FlowFilterId
        from prefect.client.schemas.sorting import FlowRunSort
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url}):
            with get_client(sync_client=True, httpx_settings={"timeout": httpx.Timeout(timeout)}) as client:
                runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=limit)
                flow_ids = list({r.flow_id for r in runs})
                flows = client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=flow_ids))) if flow_ids else []
        names = {f.id: f.name for f in flows}
        for r in runs:
            seconds = r.total_run_time.total_seconds() if r.total_run_time else None
            if not seconds and r.start_time and r.end_time:
                seconds = (r.end_time - r.start_time).total_seconds()
            result.runs.append(FlowRunRow(r.name, names.get(r.flow_id, "?"), r.state_name or "?",
                                          stage_of(r.parameters), r.start_time, seconds, str(r.id)))
    except Exception as exc:  # noqa: BLE001 - shown on screen
        result.error = f"cannot read flow runs from {url}: {type(exc).__name__}: {str(exc)[:200]}"
    return result


def read_local_runs(limit: int = 30) -> PrefectRuns:
    """The most recent flow runs from the local Prefect database; never raises."""
    result = PrefectRuns(None)
    try:
        from flows.history import local_database

        path = local_database()
        result.database = str(path or "")
        if path is None:
            result.error = "Prefect uses a database other than SQLite here: start `capsearch server` to see its runs"
            return result
        result.runs = read_local_flow_runs(limit, path)
    except Exception as exc:  # noqa: BLE001 - shown on screen
        result.error = f"cannot read the local Prefect database: {type(exc).__name__}: {str(exc)[:200]}"
    return result
