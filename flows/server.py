"""Prefect servers: ``capsearch server`` (API and UI, recorded so later runs report to it), the
temporary local API server a process uses when none is configured, and ``prepare_prefect``
(``capsearch init``: the local Prefect database created and migrated once, by starting that server).

Every server capsearch starts runs under ``flows.parent_watch`` in its own session: capsearch stops it
on exit and on SIGTERM, SIGINT or SIGHUP (``pipeline.shutdown``), and if capsearch is killed (SIGKILL,
OOM killer) the server notices within a second and shuts itself down instead of living on.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import flows  # noqa: F401 - applies the Prefect settings
from pipeline import shutdown
from flows.settings import ServerRecord, clear_server_record, prefect_home, read_server_record, write_server_record
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
    """``python -m MODULE ARGS`` that stops by itself when this process dies (see ``flows.parent_watch``)."""
    return [sys.executable, "-m", "flows.parent_watch", str(os.getpid()), module, *args]


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
    handle.forget_abandon = shutdown.add_abandon(lambda signum: handle.stop(timeout=3.0))
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


# -- the temporary local API server ---------------------------------------------------------------------------
_watched_class: Any = None


def watched_server_class() -> Any:
    """Prefect's ``SubprocessASGIServer`` (its temporary API server), started under ``flows.parent_watch``.

    Prefect starts it as a plain child (``uvicorn ... prefect.server.api.server:create_app``) and stops it
    only from ``atexit``, which a SIGTERM or SIGKILL never reaches; this one leads its own session (a
    Ctrl-C in the terminal reaches capsearch, which then stops it after the run has reported its final
    state), a second stop signal stops it at once, and it shuts itself down when capsearch dies.
    Built on first use: importing Prefect's server module is not free.
    """
    global _watched_class
    if _watched_class is not None:
        return _watched_class
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class WatchedASGIServer(SubprocessASGIServer):
        _forget_abandon: Any = None

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # The same command and environment as Prefect's own (prefect 3.9), run under the watcher.
            env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                   "PREFECT__SERVER_FINAL": "1", **get_current_settings().to_environment_variables(exclude_unset=True)}
            command = watched_command(
                "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on")
            proc = subprocess.Popen(command, env=env, start_new_session=True)
            if self._forget_abandon is None:
                self._forget_abandon = shutdown.add_abandon(lambda signum: self.stop())
            return proc

        def stop(self) -> None:
            if self.server_process is not None:
                stop_process_group(self.server_process, timeout=5.0)
            super().stop()   # Prefect's bookkeeping (the process is gone: its terminate and wait do nothing)
            if self._forget_abandon is not None:
                self._forget_abandon()
                self._forget_abandon = None

    _watched_class = WatchedASGIServer
    return _watched_class


def use_watched_temporary_server() -> None:
    """Make the temporary API server Prefect starts for this process (when no server is configured) a watched one.

    Prefect keeps one default instance per process (``SubprocessASGIServer()``, the same registry its own
    test harness uses) and starts it when a client first needs an API; registering ours as that instance
    makes every path that would start one (flow runs, logs, events) use it. Nothing happens when runs
    report to a configured server or a default instance exists already.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    if SubprocessASGIServer._instances.get(None) is None:
        watched_server_class()()   # SubprocessASGIServer.__new__ registers it as the default instance


@contextmanager
def api_server() -> Iterator[str]:
    """A Prefect API that other processes can reach: the configured one, else the local one of this process.

    Prefect's default (ephemeral) mode gives each process its own server; Dask workers
    must report to the same one as the flow, so the flow's URL is pinned in the settings
    that Prefect sends along with every task.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer

    use_watched_temporary_server()
    server = SubprocessASGIServer()
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server.api_url


def describe(record: ServerRecord | None = None) -> dict[str, Any]:
    record = record or read_server_record()
    if record is None:
        return {"running": False}
    return {"running": record.is_alive(), **record.__dict__}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
    server = watched_server_class()(port=free_port())
    try:
        server.start()
    finally:
        server.stop()
    seconds = time.perf_counter() - t0
    if console is not None:
        console.print(f"Prefect database ready in {prefect_home()} ({seconds:.1f} s)")
    return seconds
