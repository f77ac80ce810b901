"""Prefect servers: ``capsearch server`` (API and UI, recorded so later runs report to it) and the
short-lived local API server that multi-process runners need when none is configured."""
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


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    record: ServerRecord
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (and the process group it started) and forget its record."""
        proc = self.process
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
                proc.wait()
        clear_server_record(pid=proc.pid)


def start_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, allow_remote: bool = False,
                 timeout: float = START_TIMEOUT) -> ServerProcess:
    """Start ``prefect server start`` (API, UI and services) in its own process group and wait until it answers."""
    import httpx

    check_host(host, allow_remote)
    existing = read_server_record()
    if existing is not None and existing.is_alive():
        raise CapsearchError(f"a capsearch Prefect server is already running at {existing.ui_url} (pid {existing.pid})")
    log = prefect_home() / SERVER_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--analytics-off"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    api_url = f"http://{_url_host(local)}:{port}/api"
    record = ServerRecord(api_url, f"http://{_url_host(host)}:{port}", proc.pid, host, port)
    handle = ServerProcess(proc, record, log)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise CapsearchError(f"the Prefect server exited with code {proc.returncode}; see {log}")
            try:
                if client.get(f"{api_url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                handle.stop()
                raise CapsearchError(f"the Prefect server did not answer within {timeout:.0f} s; see {log}")
            time.sleep(0.25)
    write_server_record(record)
    return handle


@contextmanager
def api_server() -> Iterator[str]:
    """A Prefect API that other processes can reach: the configured one, else a local one for this block.

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

    server = SubprocessASGIServer()
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server.api_url


def describe(record: ServerRecord | None = None) -> dict[str, Any]:
    record = record or read_server_record()
    if record is None:
        return {"running": False}
    return {"running": record.is_alive(), **record.__dict__}
