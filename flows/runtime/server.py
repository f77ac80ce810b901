"""Prefect servers: ``capsearch server`` (API and UI, recorded so later runs report to it), the API a run
reports to (:func:`prefect_api`: the configured one, else the shared local server of
``flows.runtime.local_server``), the server ``capsearch serve`` needs, and ``prepare_prefect``
(``capsearch init``: the local Prefect database created and migrated once).

``capsearch server`` runs under ``flows.runtime.parent_watch`` in its own session: capsearch stops it on
exit and on SIGTERM, SIGINT or SIGHUP (``pipeline.shutdown``), and if capsearch is killed (SIGKILL,
OOM killer) the server notices within a second and shuts itself down instead of living on. The shared
local server outlives commands on purpose and stops itself once idle (see its module).
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from flows.runtime.settings import (ServerRecord, clear_server_record, configured_api_url, prefect_home,
                                    read_server_record, write_server_record)
from pipeline import shutdown
from pipeline.errors import CapsearchError, ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
START_TIMEOUT = 120.0
SERVER_LOG = "logs/server.log"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> str | None:
    """Refuse a non-loopback host unless asked explicitly; return the warning to show when allowed."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ConfigError(f"refusing to serve the Prefect UI on {host}: anyone who can reach this machine could "
                          "see and start runs; use --allow-remote if that is what you want")
    return (f"the Prefect server listens on {host} without authentication: anyone who can reach port "
            "and host can see and start runs")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def watched_command(module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` that stops by itself when this process dies (see ``flows.runtime.parent_watch``)."""
    return [sys.executable, "-m", "flows.runtime.parent_watch", str(os.getpid()), module, *args]


def stop_process_group(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM to the process group a child leads (``start_new_session``), SIGKILL to what is left after ``timeout``.

    The leader is reaped only after the SIGKILL: until then it is at least a zombie, so its group id
    cannot have been given to anyone else.
    """
    if proc.returncode is not None:
        return   # reaped already: its group id may belong to another process by now
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not _exited(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)   # the leader if it did not stop, and anything it left behind
    proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exited(pid: int) -> bool:
    """Whether a child has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    record: ServerRecord
    log: Path
    forget_abandon: Any = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (and the process group it started) and forget its record."""
        stop_process_group(self.process, timeout)
        clear_server_record(pid=self.process.pid)
        if self.forget_abandon is not None:
            self.forget_abandon()
            self.forget_abandon = None


def server_environment(host: str, port: int, ui_url: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of ``prefect server start --host HOST --port PORT``.

    Prefect's UI asks its API at ``PREFECT_UI_API_URL``, which defaults to ``PREFECT_SERVER_API_HOST`` and
    ``PREFECT_SERVER_API_PORT`` (127.0.0.1:4200), not to the ``--host`` and ``--port`` the server was started
    with: on any other port the UI could not reach its API. Both are set to match (an address a browser can
    use: this machine's name when listening on every interface), unless the user set the UI's API address
    (a reverse proxy, say)."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_API_HOST"] = host
    env["PREFECT_SERVER_API_PORT"] = str(port)
    if not (env.get("PREFECT_UI_API_URL") or env.get("PREFECT_SERVER_UI_API_URL")):
        env["PREFECT_UI_API_URL"] = f"{ui_url}/api"
    return env


def start_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, allow_remote: bool = False,
                 timeout: float = START_TIMEOUT) -> ServerProcess:
    """Start ``prefect server start`` (API, UI and services) in its own process group and wait until it answers."""
    check_host(host, allow_remote)
    existing = read_server_record()
    if existing is not None and existing.is_alive():
        raise CapsearchError(f"a capsearch Prefect server is already running at {existing.ui_url} (pid {existing.pid})")
    log = prefect_home() / SERVER_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    api_url = f"http://{_url_host(local)}:{port}/api"
    ui_url = f"http://{_url_host(host)}:{port}"
    env = server_environment(host, port, ui_url)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            watched_command("prefect", "server", "start", "--host", host, "--port", str(port), "--analytics-off"),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    record = ServerRecord(api_url, ui_url, proc.pid, host, port)
    handle = ServerProcess(proc, record, log)
    handle.forget_abandon = shutdown.add_abandon(lambda why: handle.stop(timeout=3.0))
    try:
        _wait_until_healthy(proc, api_url, log, timeout)
    except BaseException:
        handle.stop()
        raise
    write_server_record(record)
    return handle


def _wait_until_healthy(proc: subprocess.Popen[bytes], api_url: str, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise CapsearchError(f"the Prefect server exited with code {proc.returncode}; see {log}")
            try:
                if client.get(f"{api_url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise CapsearchError(f"the Prefect server did not answer within {timeout:.0f} s; see {log}")
            time.sleep(0.25)


# -- the API a run reports to ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Api:
    """The Prefect API a run reports to, and the process serving it where capsearch knows it."""
    url: str
    owner: str | None = None      # the shared local server's process (pipeline.run_owner JSON); None: not known
    shared: bool = False          # the shared local server (flows.runtime.local_server)


@contextmanager
def prefect_api(idle: float, cancel: threading.Event | None = None) -> Iterator[Api]:
    """The API the flows run inside report to: the configured one (``capsearch server``, ``PREFECT_API_URL``,
    a Prefect profile), else the shared local server, started if none runs and used as one of its users.

    Every process of the run (Dask workers too) can reach either; Prefect is imported here (the caller runs
    flows next)."""
    from flows.runtime.local_server import local_api
    from flows.runtime.prefect_api import drain_workers, reporting_to

    configured = configured_api_url()
    if configured:
        yield Api(configured)
        return
    with local_api(idle, cancel) as server, reporting_to(server.api_url):
        try:
            yield Api(server.api_url, server.owner, shared=True)
        finally:
            if server.is_alive():
                drain_workers()   # the run's last logs and events, while this command still holds the server


@contextmanager
def server_for_serve(say: Callable[[str], None]) -> Iterator[str]:
    """The API of the configured Prefect server, or of a ``capsearch server`` started for as long as
    ``capsearch serve`` runs (schedules need its scheduler service, which the shared local server does not run)."""
    from flows.runtime.prefect_api import reporting_to

    configured = configured_api_url()
    if configured:
        yield configured
        return
    say("no Prefect server is running: starting one for as long as `capsearch serve` runs")
    try:
        handle = start_server(DEFAULT_HOST, DEFAULT_PORT)
    except Exception:  # noqa: BLE001 - port 4200 taken: any free port will do
        handle = start_server(DEFAULT_HOST, free_port())
    os.environ["PREFECT_API_URL"] = handle.record.api_url     # the runner's child processes report to it too
    try:
        with reporting_to(handle.record.api_url):
            yield handle.record.api_url
    finally:
        handle.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def prepare_prefect(ws: Any = None, console: Any = None) -> float:
    """Create and migrate the local Prefect database (and register its block types) once.

    Starts the shared local server the way the first run would (``flows.runtime.local_server``: it migrates
    the database) and leaves it up for the next command, which then starts at once; it stops by itself once
    no command has used it for ``orchestration.server_idle`` seconds. Nothing to do when runs report to a
    server (``capsearch server`` or ``PREFECT_API_URL``). Returns the seconds it took.
    """
    from flows.runtime.local_server import DEFAULT_IDLE, local_api

    t0 = time.perf_counter()
    configured = configured_api_url()
    if configured:
        if console is not None:
            console.print(f"Prefect: runs report to {configured}")
        return 0.0
    idle = ws.config.orchestration.server_idle if ws is not None else DEFAULT_IDLE
    with local_api(idle):
        pass
    seconds = time.perf_counter() - t0
    if console is not None:
        console.print(f"Prefect database ready in {prefect_home()} ({seconds:.1f} s); its local server stays up "
                      f"until {idle / 60:g} minutes pass without a command using it")
    return seconds
