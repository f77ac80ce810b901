"""Prefect set-up for capsearch: what the entry points apply (:func:`apply_settings`) before Prefect is imported.

The entry points are the CLI (``capsearch.cli.app.main``), the TUI (``tui.launch.run_tui``), ``flows.api.run``
(for code that calls it directly), the ``pipeline`` flow (a deployment's entry) and the tests' conftest;
importing ``flows`` changes nothing.

- ``PREFECT_HOME`` is ``<capsearch home>/.prefect`` unless the user set one.
- The quiet defaults of ``pipeline.environment.quiet_defaults`` (analytics off: ``DO_NOT_TRACK=1``,
  ``PREFECT_SERVER_ANALYTICS_ENABLED=false``; a longer start-up timeout for the ephemeral server).
- Prefect's logs go to ``$PREFECT_HOME/logs/prefect.log`` instead of the terminal (the
  CLI's progress bars and the TUI draw there).
- When ``capsearch server`` is running, runs report to it (``PREFECT_API_URL``).

Everything here uses only the standard library: importing it must stay cheap.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.atomic import pid_alive
from pipeline.environment import quiet_defaults

SERVER_RECORD = "capsearch-server.json"
LOG_FILE = "logs/prefect.log"
LOGGING_CONFIG = "capsearch-logging.yml"
TASK_RUN_RECORDER_BATCH = "500"

_applied: dict[str, str] = {}

# Prefect's own logging.yml with every terminal handler replaced by one rotating file.
_LOGGING_YML = """\
# Written by capsearch (flows/runtime/settings.py): Prefect logs go to a file, never to the terminal.
version: 1
disable_existing_loggers: False

formatters:
  standard:
    (): prefect.logging.formatters.PrefectFormatter
    format: "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(process)d | %(name)s - %(message)s"
    flow_run_fmt: "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(process)d | Flow run %(flow_run_name)r - %(message)s"
    task_run_fmt: "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(process)d | Task run %(task_run_name)r - %(message)s"
    datefmt: "%Y-%m-%d %H:%M:%S"

handlers:
  file:
    level: 0
    class: logging.handlers.RotatingFileHandler
    formatter: standard
    filename: "{log_file}"
    maxBytes: 10000000
    backupCount: 3
    encoding: utf-8
    delay: true

  api:
    level: 0
    class: prefect.logging.handlers.APILogHandler

  worker_api:
    level: 0
    class: prefect.logging.handlers.WorkerAPILogHandler

loggers:
  prefect:
    level: "${{PREFECT_LOGGING_LEVEL}}"
    handlers: [file]
    propagate: false

  prefect.extra:
    level: "${{PREFECT_LOGGING_LEVEL}}"
    handlers: [api, file]
    propagate: false

  prefect.flow_runs:
    level: NOTSET
    handlers: [api]

  prefect.task_runs:
    level: NOTSET
    handlers: [api]

  prefect.workers:
    level: NOTSET
    handlers: [worker_api]

  prefect.server:
    level: "${{PREFECT_SERVER_LOGGING_LEVEL}}"

  prefect.client:
    level: "${{PREFECT_LOGGING_LEVEL}}"

  prefect._internal:
    level: "${{PREFECT_INTERNAL_LOGGING_LEVEL}}"
    handlers: [file]
    propagate: false

  uvicorn:
    level: "${{PREFECT_SERVER_LOGGING_LEVEL}}"
    handlers: [file]
    propagate: false

  fastapi:
    level: "${{PREFECT_SERVER_LOGGING_LEVEL}}"
    handlers: [file]
    propagate: false

  distributed:
    level: ERROR
    handlers: [file]
    propagate: false

root:
  level: WARNING
  handlers: [file]
"""


@dataclass(frozen=True)
class ServerRecord:
    """A Prefect server started by ``capsearch server`` (written to ``$PREFECT_HOME``)."""
    api_url: str
    ui_url: str
    pid: int
    host: str
    port: int

    def is_alive(self) -> bool:
        return pid_alive(self.pid) and _port_open(self.api_url)


def prefect_home(environ: dict[str, str] | os._Environ | None = None) -> Path:
    """The user's ``PREFECT_HOME``, else ``<capsearch home>/.prefect``."""
    env = os.environ if environ is None else environ
    if env.get("PREFECT_HOME"):
        return Path(env["PREFECT_HOME"]).expanduser()
    home = Path(env.get("CAPSEARCH_HOME") or os.getcwd()).expanduser().resolve()
    return home / ".prefect"


def log_path() -> Path:
    return prefect_home() / LOG_FILE


def apply_settings(environ: os._Environ | dict[str, str] | None = None) -> dict[str, str]:
    """Set the Prefect environment for this process (and its children); returns what was set.

    Values the user set are kept. Idempotent and cheap (no Prefect import).
    """
    env = os.environ if environ is None else environ
    home = prefect_home(env)
    set_now: dict[str, str] = {}

    def default(key: str, value: str) -> None:
        if not env.get(key):
            env[key] = value
            set_now[key] = value

    default("PREFECT_HOME", str(home))
    set_now.update(quiet_defaults(env))    # analytics off, the temporary server's start-up timeout
    # The server records task runs one at a time by default; with SQLite, those writes collide with
    # flow-run creation ("database is locked", answered after a 2 s client retry). Batch them.
    for key in ("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE",
                "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE"):
        default(key, TASK_RUN_RECORDER_BATCH)
    if not env.get("PREFECT_LOGGING_SETTINGS_PATH"):
        default("PREFECT_LOGGING_SETTINGS_PATH", str(_write_logging_config(home)))
    # A temporary Prefect server (run under flows.runtime.parent_watch, which imports this package) serves its
    # own API: it must not be pointed at a `capsearch server` that came up after its parent started.
    if not env.get("PREFECT_API_URL") and not env.get("PREFECT__SERVER_EPHEMERAL"):
        record = read_server_record(home)
        if record is not None and record.is_alive():
            default("PREFECT_API_URL", record.api_url)
    _applied.update(set_now)
    return set_now


def configured_api_url(environ: dict[str, str] | os._Environ | None = None, *, in_process: bool = True) -> str:
    """The Prefect API runs report to by configuration ('' when none is: then they use the shared local server,
    ``flows.runtime.local_server``): ``PREFECT_API_URL`` (set by :func:`apply_settings` while ``capsearch server``
    runs), else (``in_process``) the setting of a Prefect already imported here (a test harness,
    ``temporary_settings``), else the active Prefect profile. Reads no more than a small TOML file: Prefect is
    not imported for it."""
    env = os.environ if environ is None else environ
    if env.get("PREFECT_API_URL"):
        return str(env["PREFECT_API_URL"])
    if in_process and "prefect.settings" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        return str(PREFECT_API_URL.value() or "")
    return _profile_api_url(env)


def _profile_api_url(env: dict[str, str] | os._Environ) -> str:
    """``PREFECT_API_URL`` of the active profile in Prefect's profiles file, '' when it sets none."""
    path = Path(env.get("PREFECT_PROFILES_PATH") or prefect_home(env) / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return ""
    active = env.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    profile = (data.get("profiles") or {}).get(active) or {}
    value = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return str(value) if value else ""


def applied() -> dict[str, str]:
    """What :func:`apply_settings` set in this process."""
    return dict(_applied)


def _write_logging_config(home: Path) -> Path:
    path = home / LOGGING_CONFIG
    log_file = home / LOG_FILE
    text = _LOGGING_YML.format(log_file=str(log_file).replace("\\", "/").replace("$", "$$"))
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    except OSError:
        pass  # read-only home: Prefect falls back to its own configuration
    return path


# -- the server record ------------------------------------------------------------------------------------
def server_record_path(home: Path | None = None) -> Path:
    return (home or prefect_home()) / SERVER_RECORD


def read_server_record(home: Path | None = None) -> ServerRecord | None:
    path = server_record_path(home)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServerRecord(str(data["api_url"]), str(data["ui_url"]), int(data["pid"]), str(data["host"]), int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_server_record(record: ServerRecord, home: Path | None = None) -> Path:
    path = server_record_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.__dict__, indent=2), encoding="utf-8")
    return path


def clear_server_record(pid: int | None = None, home: Path | None = None) -> None:
    """Remove the record (only if it is the given server's, when ``pid`` is given)."""
    record = read_server_record(home)
    if record is not None and (pid is None or record.pid == pid):
        server_record_path(home).unlink(missing_ok=True)


def _port_open(url: str, timeout: float = 0.2) -> bool:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        with socket.create_connection((host, parsed.port or 80), timeout=timeout):
            return True
    except OSError:
        return False

