"""Scheduled deployments (``capsearch serve``).

The nightly deployment runs the ``pipeline`` flow on a workspace at the configured
cron schedule: ingest picks up new photos (from ``orchestration.watch_folder`` when
set, else the configured collection), every enabled captioner captions them, their
captions are embedded and the evaluation and report are made again. Every stage
computes only what is missing, so a night with no new photos costs seconds.
"""
from __future__ import annotations

import os
from typing import Any, Callable
from uuid import UUID

from flows.naming import NIGHTLY, nightly_deployment_name, on_demand_deployment_name, run_tags
from flows.runtime.prefect_api import sync
from pipeline.errors import ConfigError
from pipeline.workspace import Workspace, capsearch_home, resolve_home_path

RUNNER_POLL_SECONDS = 2


def check_schedule(cron: str, timezone: str) -> None:
    """A clear error for a malformed cron line or an unknown time zone (before anything is registered)."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ConfigError(f"orchestration.schedule_cron '{cron}' is not a valid cron expression (e.g. \"0 2 * * *\")") from None
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError:
        raise ConfigError(f"orchestration.schedule_timezone '{timezone}' is not a known time zone (e.g. Europe/Berlin)") from None


def nightly_deployment(ws: Workspace, cron: str | None = None, timezone: str | None = None) -> Any:
    """The nightly ``pipeline`` deployment of a workspace (a ``RunnerDeployment``, not yet registered)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.pipeline_flow import pipeline

    orch = ws.config.orchestration
    cron = cron or orch.schedule_cron
    timezone = timezone or orch.schedule_timezone
    check_schedule(cron, timezone)
    # A night's run waits for a run still going on in the workspace (one run at a time) instead of failing.
    parameters: dict[str, Any] = {"workspace": str(ws.root), "runner": orch.runner,
                                  "dask_address": orch.dask_address or None, "wait": True}
    if orch.watch_folder:
        parameters["data_path"] = str(resolve_home_path(orch.watch_folder))
    return sync(
        pipeline.to_deployment,
        name=nightly_deployment_name(ws), schedules=[Cron(cron, timezone=timezone)], parameters=parameters,
        tags=[*run_tags(ws), NIGHTLY], entrypoint_type=EntrypointType.MODULE_PATH,
        description=(f"capsearch nightly run of {ws.root}: ingest new photos, caption them with every enabled "
                     "captioner, embed the captions, evaluate and report"),
    )


def on_demand_deployment(ws: Workspace) -> Any:
    """The ``pipeline`` deployment that runs started from the TUI or ``capsearch run --detach`` go through
    while ``capsearch serve`` runs (``flows.runtime.detach``): no schedule, stages and captioners per run."""
    from prefect.deployments.runner import EntrypointType

    from flows.pipeline_flow import pipeline

    orch = ws.config.orchestration
    return sync(
        pipeline.to_deployment,
        name=on_demand_deployment_name(ws), parameters={"workspace": str(ws.root), "runner": orch.runner,
                                             "dask_address": orch.dask_address or None},
        tags=[*run_tags(ws), "on-demand"], entrypoint_type=EntrypointType.MODULE_PATH,
        description=f"capsearch runs of {ws.root} started from the TUI or `capsearch run --detach`",
    )


def build_deployments(ws: Workspace, cron: str | None = None, timezone: str | None = None) -> list[Any]:
    return [nightly_deployment(ws, cron, timezone), on_demand_deployment(ws)]


def register(deployments: list[Any]) -> list[UUID]:
    """Create or update the deployments in the Prefect API (what ``serve`` does first)."""
    return [sync(d.apply) for d in deployments]


def serve(deployments: list[Any], on_ready: Callable[[], None] | None = None) -> None:
    """Register the deployments and run their scheduled runs until a stop signal (blocks).

    Prefect's ``Runner`` (what ``prefect.serve`` runs) takes SIGTERM over in the main thread; here
    SIGTERM, SIGINT and SIGHUP all go through ``pipeline.shutdown``: the runner stops (cancelling a
    scheduled run in progress and pausing the schedules, as ``prefect.serve`` does), the caller stops
    the server it started, and the command exits with 128 + the signal's number. ``on_ready`` is
    called once the runner is serving.
    """
    import asyncio
    import signal
    import time

    from prefect.runner import Runner

    from pipeline import shutdown

    class SignalledRunner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            shutdown.request_stop(signal.SIGTERM)

        async def __aenter__(self) -> "SignalledRunner":
            entered = await super().__aenter__()
            if on_ready is not None:
                on_ready()
            return entered

    # Scheduled runs execute in child processes: they must resolve relative data paths the same way.
    os.environ.setdefault("CAPSEARCH_HOME", str(capsearch_home()))
    # Poll for new runs every few seconds: a run started from the TUI should not wait Prefect's default 10 s.
    runner = SignalledRunner(pause_on_shutdown=True, query_seconds=RUNNER_POLL_SECONDS)
    for deployment in deployments:
        runner.add_deployment(deployment)

    def stop(signum: int) -> None:
        deadline = time.monotonic() + 60
        while not runner.started and time.monotonic() < deadline:
            time.sleep(0.1)   # a signal while the runner starts: stop it once it has (astop needs that)
        if runner.started and not runner.stopping:
            runner.execute_in_background(runner.astop)

    with shutdown.cancellable(on_stop=stop):
        asyncio.run(runner.start())
