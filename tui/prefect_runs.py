"""Recent Prefect flow runs for the Runs screen, read with a short timeout (called from a worker thread)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

START_HINT = ("No Prefect server is configured (PREFECT_API_URL is not set), so runs use a temporary API that "
              "lives only while they run. Start one with `capsearch server` and set PREFECT_API_URL to the "
              "address it prints to keep a history of flow runs.")


@dataclass(frozen=True)
class FlowRunRow:
    name: str
    flow: str
    state: str
    stage: str
    started: datetime | None
    seconds: float | None


@dataclass
class PrefectRuns:
    api_url: str | None
    ui_url: str | None = None
    runs: list[FlowRunRow] = field(default_factory=list)
    error: str = ""


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


def _stage_of(run) -> str:
    """A stage flow's ``stage[:target]``; a pipeline flow's stages ('all' when it ran every stage)."""
    params = getattr(run, "parameters", None) or {}
    if params.get("stage"):
        return f"{params['stage']}:{params['target']}" if params.get("target") else str(params["stage"])
    stages = params.get("stages")
    if stages:
        return ", ".join(stages) if isinstance(stages, (list, tuple)) else str(stages)
    return "all"


def read_recent_runs(limit: int = 30, timeout: float = 3.0, api_url: str | None = None) -> PrefectRuns:
    """The ``limit`` most recent flow runs from the configured server; never raises."""
    url = api_url or configured_api_url()
    if not url:
        return PrefectRuns(None)
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
            result.runs.append(FlowRunRow(r.name, names.get(r.flow_id, "?"), r.state_name or "?", _stage_of(r),
                                          r.start_time, seconds))
    except Exception as exc:  # noqa: BLE001 - shown on screen
        result.error = f"cannot read flow runs from {url}: {type(exc).__name__}: {str(exc)[:200]}"
    return result
