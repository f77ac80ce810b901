"""The local Prefect API server that the commands of a capsearch home share, kept up between them.

With no server configured (``capsearch server``, ``PREFECT_API_URL``, a Prefect profile), each run used to
start Prefect's temporary API server for itself: about 10 s of a 2-core machine per command, whatever the
run had to do. Instead the first command that needs an API starts this one, and the next commands use it:

* **Where it lives**: ``$PREFECT_HOME/local-server/`` (``PREFECT_HOME`` is ``<capsearch home>/.prefect``):
  ``server.json`` (its owner: host, pid and process start time; its port and API address), ``start.lock``
  and ``users.lock``; its log is ``$PREFECT_HOME/logs/local-server.log``. Its database is Prefect's default
  one under ``PREFECT_HOME``, the one ``capsearch server`` and the TUI's Runs screen read. It listens on
  127.0.0.1, on a port the OS gave when it started.
* **Who uses it**: a command holds a shared ``flock`` on ``users.lock`` for as long as it uses the API
  (:func:`local_api`); the kernel drops the lock when the command ends, however it ends (SIGKILL included).
* **Who starts it**: the first command that finds no live server, while it holds ``start.lock``
  exclusively: two commands starting at once start one server, the second waits and finds the first's.
* **Who stops it**: the server itself (:func:`main`). A watchdog thread in it takes ``users.lock``
  exclusively whenever no command holds it; once that has been so for ``orchestration.server_idle`` seconds
  (600 by default) it keeps the lock (so no command can start using it meanwhile), removes its record and
  shuts down: SIGTERM to itself (uvicorn finishes the requests in flight), SIGKILL 10 s later. It needs no
  one else to go, neither the command that started it (which may have been SIGKILLed) nor a terminal: it
  runs in a session of its own, which a Ctrl-C or the hang-up of the starting terminal does not reach.
  :func:`stop_local_server` stops it at once.

A run that reports to it watches it (``flows.runtime.server_watch``): its death ends the run at once.

The client side uses the standard library only (no Prefect import): a run with nothing to compute never
comes here, and one that has work learns the API's address before Prefect is imported.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Iterator

from flows.runtime.settings import prefect_home
from pipeline.errors import CapsearchError
from pipeline.run_owner import owner_of, owner_state, signal_owner

FOLDER = "local-server"
RECORD = "server.json"
START_LOCK = "start.lock"
USERS_LOCK = "users.lock"
LOG = "logs/local-server.log"
DEFAULT_IDLE = 600.0              # seconds with no command using it before it stops (orchestration.server_idle)
START_TIMEOUT = 180.0             # seconds a new server may take to answer (migrating a new database included)
IDLE_POLL = 1.0                   # how often the server looks for users
GRACE_SECONDS = 10.0              # SIGTERM, then SIGKILL this much later
LOCK_POLL = 0.05


@dataclass(frozen=True)
class LocalServer:
    """The shared server as its record says: the API address and the process (owner JSON) that serves it."""
    api_url: str
    port: int
    owner: str
    pid: int
    idle: float

    def is_alive(self) -> bool:
        return owner_state(self.owner) == "alive"


def folder(home: Path | None = None) -> Path:
    return (home or prefect_home()) / FOLDER


def read_record(home: Path | None = None) -> LocalServer | None:
    try:
        data = json.loads((folder(home) / RECORD).read_text(encoding="utf-8"))
        return LocalServer(str(data["api_url"]), int(data["port"]), str(data["owner"]), int(data["pid"]),
                           float(data["idle"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(server: LocalServer, home: Path | None = None) -> None:
    path = folder(home) / RECORD
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(server), indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _clear_record(pid: int, home: Path | None = None) -> None:
    """Remove the record if it names the server ``pid``."""
    record = read_record(home)
    if record is not None and record.pid == pid:
        (folder(home) / RECORD).unlink(missing_ok=True)


# -- the client side: commands that use the server ----------------------------------------------------------
@contextmanager
def local_api(idle: float = DEFAULT_IDLE, cancel: threading.Event | None = None,
              timeout: float = START_TIMEOUT) -> Iterator[LocalServer]:
    """The shared server for the block (started when none is running), held as one of its users.

    ``idle``: the seconds a server started now stays up once no command uses it. ``cancel`` (a stop signal)
    ends a wait for the locks or for the server's start."""
    where = folder()
    where.mkdir(parents=True, exist_ok=True)
    users = open(where / USERS_LOCK, "a+b")
    try:
        _lock(users, fcntl.LOCK_SH, cancel, "the local Prefect server to finish stopping")
        with open(where / START_LOCK, "a+b") as starting:
            _lock(starting, fcntl.LOCK_EX, cancel, "another command starting the local Prefect server")
            try:
                server = _running(where) or _start(where, idle, cancel, timeout)
            finally:
                fcntl.flock(starting, fcntl.LOCK_UN)
        yield server
    finally:
        users.close()   # the lease: the server may stop once it has been idle long enough


def _lock(handle: IO[bytes], kind: int, cancel: threading.Event | None, what: str) -> None:
    """``flock`` that a stop signal can interrupt (polled: a blocking flock in a worker thread cannot be)."""
    while True:
        try:
            fcntl.flock(handle, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if cancel is not None and cancel.is_set():
            raise CapsearchError(f"stopped while waiting for {what}")
        time.sleep(LOCK_POLL)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # 127.0.0.1: never through a proxy


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with _DIRECT.open(f"{api_url}/health", timeout=timeout) as answer:
            return answer.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _running(where: Path, patience: float = 10.0) -> LocalServer | None:
    """The recorded server if it runs and answers; a recorded server that runs but does not answer for
    ``patience`` seconds is wedged and killed (no command can be using it: it would answer)."""
    record = read_record(where.parent)
    if record is None:
        return None
    deadline = time.monotonic() + patience
    while record.is_alive():
        if _healthy(record.api_url):
            return record
        if time.monotonic() > deadline:
            signal_owner(record.owner, signal.SIGKILL)
            break
        time.sleep(0.2)
    _clear_record(record.pid, where.parent)
    return None


def _server_environment() -> dict[str, str]:
    """The environment of the server: this one (PREFECT_HOME, analytics off, logging to a file), serving its
    own API with Prefect's settings for its temporary server (no UI; the services a temporary server runs)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1",
               PYTHONUNBUFFERED="1")
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(where: Path, idle: float, cancel: threading.Event | None, timeout: float) -> LocalServer:
    log = where.parent / LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):      # a port taken between choosing it and binding it: choose another
        port = _free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        with open(log, "ab") as out:
            out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} started by pid {os.getpid()} on port {port}\n".encode())
            out.flush()
            # A session of its own (setsid in the child, no preexec_fn): the terminal's Ctrl-C and hang-up do not
            # reach it, and it outlives this command on purpose (it stops itself when idle, see the module).
            proc = subprocess.Popen([sys.executable, "-m", "flows.runtime.local_server", "--port", str(port),
                                     "--idle", str(idle)], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=_server_environment(), start_new_session=True,
                                    close_fds=True, cwd=where)   # close_fds: this command's lease is not its
        server = LocalServer(api_url, port, owner_of(proc.pid), proc.pid, idle)
        if _wait_until_healthy(proc, api_url, cancel, timeout, log):
            _write_record(server, where.parent)
            return server
    raise CapsearchError(f"the local Prefect server could not listen on a port; see {log}")


def _wait_until_healthy(proc: subprocess.Popen[bytes], api_url: str, cancel: threading.Event | None,
                        timeout: float, log: Path) -> bool:
    """True once it answers; False when it exited for want of its port; raises for any other end."""
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            if "address already in use" in _tail(log).lower():
                return False
            raise CapsearchError(f"the local Prefect server exited at start (code {code}): {_tail(log)}; see {log}")
        if _healthy(api_url, timeout=1.0):
            return True
        if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
            _kill_group(proc)
            if cancel is not None and cancel.is_set():
                raise CapsearchError("stopped while the local Prefect server was starting")
            raise CapsearchError(f"the local Prefect server did not answer within {timeout:.0f} s; see {log}")
        time.sleep(0.1)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    kept = [line.strip() for line in text if line.strip() and not line.startswith("#")][-lines:]
    return " | ".join(kept) or "(nothing)"


def stop_local_server(home: Path | None = None, timeout: float = GRACE_SECONDS) -> bool:
    """Stop the shared server now, if one runs (SIGTERM, SIGKILL after ``timeout``); whether one did."""
    record = read_record(home)
    if record is None:
        return False
    stopped = signal_owner(record.owner, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while stopped and record.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if record.is_alive():
        signal_owner(record.owner, signal.SIGKILL)
    _clear_record(record.pid, home)
    return stopped


# -- the server side -----------------------------------------------------------------------------------------
def stop_when_idle(users: IO[bytes], idle: float, poll: float = IDLE_POLL, grace: float = GRACE_SECONDS) -> None:
    """Block until no command has held ``users`` for ``idle`` seconds, then stop this process (see the module)."""
    last_used = time.monotonic()
    while True:
        time.sleep(poll)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            last_used = time.monotonic()       # a command uses it
            continue
        if time.monotonic() - last_used < idle:
            fcntl.flock(users, fcntl.LOCK_UN)
            continue
        break                                  # idle: keep the lock until this process has gone
    _clear_record(os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.runtime.local_server --port P --idle S``: Prefect's API on 127.0.0.1:P until idle."""
    parser = argparse.ArgumentParser(prog="python -m flows.runtime.local_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE)
    args = parser.parse_args(argv)
    where = folder()
    where.mkdir(parents=True, exist_ok=True)
    users = open(where / USERS_LOCK, "a+b")
    threading.Thread(target=stop_when_idle, args=(users, args.idle), name="idle-stop", daemon=True).start()
    import uvicorn

    # The same application and options as Prefect's temporary server (prefect.server.api.server.SubprocessASGIServer)
    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=args.port,
                log_level="error", lifespan="on")


if __name__ == "__main__":
    main()
