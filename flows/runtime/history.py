"""The history of Prefect flow runs, read from the local Prefect database without starting a server.

Every capsearch run reports to a Prefect API: ``capsearch server`` when it is up, otherwise a temporary
server of its own; either way the runs land in the same database, ``$PREFECT_HOME/prefect.db``. The TUI's
Runs screen reads it directly, with Prefect's own table definitions (``prefect.server.database.orm_models``)
over a read-only SQLite connection, so it needs neither a running server nor starting one (a temporary
server costs seconds and a few hundred MB). ``capsearch server`` shows the same runs in the Prefect UI.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any



@dataclass(frozen=True)
class FlowRunRow:
    name: str
    flow: str
    state: str
    stage: str
    started: datetime | None
    seconds: float | None
    id: str = ""
    deployment: str = ""
    workspace: str = ""          # the flow run's ``workspace`` parameter (every capsearch flow has one)


def stage_of(parameters: dict[str, Any] | None) -> str:
    """A stage flow's ``stage[:variant]``; a pipeline flow's stages ('all' when it ran every stage)."""
    params = parameters or {}
    if params.get("stage"):
        variant = params.get("variant") or params.get("target")     # "target": stage flow runs recorded by earlier capsearch versions
        return f"{params['stage']}:{variant}" if variant else str(params["stage"])
    stages = params.get("stages")
    if stages:
        return ", ".join(stages) if isinstance(stages, (list, tuple)) else str(stages)
    return "all"


def local_database() -> Path | None:
    """The SQLite file of the local Prefect database (None when Prefect is set up with another database)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    text = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url or "")
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if text.startswith(prefix):
            return Path(text[len(prefix):].split("?", 1)[0])
    return None


def workspace_of(parameters: dict[str, Any] | None) -> str:
    return str((parameters or {}).get("workspace") or "")


def read_local_flow_runs(limit: int = 30, path: Path | None = None, workspace: str | None = None) -> list[FlowRunRow]:
    """The ``limit`` most recent flow runs in the local Prefect database, newest first ([] if it has none yet);
    with ``workspace`` (a workspace's absolute path), only the flow runs of that workspace."""
    import sqlalchemy as sa
    from prefect.server.database import orm_models as orm

    path = path or local_database()
    if path is None or not path.exists():
        return []
    engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", connect_args={"timeout": 5})
    run, flow, deployment = orm.FlowRun, orm.Flow, orm.Deployment
    query = (sa.select(run.id, run.name, run.state_name, run.state_type, run.start_time, run.end_time,
                       run.total_run_time, run.parameters, flow.name.label("flow"),
                       deployment.name.label("deployment"))
             .join(flow, flow.id == run.flow_id)
             .outerjoin(deployment, deployment.id == run.deployment_id)
             .order_by(sa.func.coalesce(run.start_time, run.expected_start_time).desc())
             .limit(limit))
    if workspace is not None:
        query = query.where(sa.func.json_extract(run.parameters, "$.workspace") == workspace)
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(query))
    finally:
        engine.dispose()
    out = []
    for r in rows:
        seconds = r.total_run_time.total_seconds() if r.total_run_time else None
        if not seconds and r.start_time and r.end_time:
            seconds = (r.end_time - r.start_time).total_seconds()
        state = r.state_name or (r.state_type.value.title() if r.state_type else "?")
        out.append(FlowRunRow(r.name, r.flow, state, stage_of(r.parameters), r.start_time, seconds, str(r.id),
                              f"{r.flow}/{r.deployment}" if r.deployment else "", workspace_of(r.parameters)))
    return out
