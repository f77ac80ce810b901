"""One-time Prefect preparation (``capsearch init``) and the settings every capsearch run uses."""
from __future__ import annotations

import socket
import time
from contextlib import contextmanager
from typing import Any, Iterator

import flows  # noqa: F401 - applies the Prefect settings before Prefect is imported
from flows.settings import prefect_home


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def prefect_database_path() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().server.database.connection_url or "")


def prepare_prefect(ws: Any = None, console: Any = None) -> float:
    """Create and migrate the local Prefect database (and register its block types) once.

    Starts Prefect's local server the way the first run would, then stops it, so
    the first ``capsearch run`` does not pay for the migration. Nothing to do when
    runs report to a server (``capsearch server`` or ``PREFECT_API_URL``).
    Returns the seconds it took.
    """
    from prefect.settings import PREFECT_API_URL

    t0 = time.perf_counter()
    if PREFECT_API_URL.value():
        if console is not None:
            console.print(f"Prefect: runs report to {PREFECT_API_URL.value()}")
        return 0.0
    from flows.server import watched_server_class

    server = watched_server_class()(port=free_port())
    try:
        server.start()
    finally:
        server.stop()
    seconds = time.perf_counter() - t0
    if console is not None:
        console.print(f"Prefect database ready in {prefect_home()} ({seconds:.1f} s)")
    return seconds


@contextmanager
def no_heartbeats() -> Iterator[None]:
    """Turn off flow-run heartbeats for the flows started inside the block.

    Prefect joins its heartbeat thread when a flow run ends, which costs up to a
    second per flow run; capsearch starts one flow run per stage. The open-source
    server does not use heartbeats unless an automation is set up for them.
    """
    from prefect.context import SettingsContext, get_settings_context

    current = get_settings_context()
    settings = current.settings
    if settings.flows.heartbeat_frequency is None:
        yield
        return
    quiet = settings.model_copy(update={"flows": settings.flows.model_copy(update={"heartbeat_frequency": None})})
    with SettingsContext(profile=current.profile, settings=quiet):
        yield
