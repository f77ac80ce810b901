"""The local Prefect server that the commands of a capsearch home share (``flows.runtime.local_server``).

It outlives the command that started it on purpose, so these tests check who stops it and when: it stops by
itself once no command has used it for its idle time, also after the command that started it was SIGKILLed,
never while a command uses it; two commands starting at once start one. Real processes, a real server, real
signals; every process carries the test's tag (``process_tag``), so nothing of a test outlives it.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.commands import REPO, wait_until

pytestmark = pytest.mark.slow

# A command that uses the local server: waits for GO (a file, '-' for none), holds the server for HOLD seconds,
# printing its pid and API address once it answers. A server it starts stops IDLE seconds after its last user.
COMMAND = """
import json, os, sys, time
from flows.runtime.settings import apply_settings
apply_settings()
from flows.runtime.local_server import local_api
go, hold, idle = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
while go != "-" and not os.path.exists(go):
    time.sleep(0.01)
with local_api(idle=idle) as server:
    print(json.dumps({"pid": server.pid, "api_url": server.api_url}), flush=True)
    time.sleep(hold)
"""
START = 240          # seconds a first start may take on a loaded 2-core machine


def start(env: dict[str, str], hold: float, idle: float = 1.0, go: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", COMMAND, str(go or "-"), str(hold), str(idle)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def server_of(proc: subprocess.Popen[str]) -> dict:
    """What the command printed once it held the server (its pid and API address)."""
    line = proc.stdout.readline()
    assert line, f"the command ended without a server: {proc.stderr.read()[-2000:]}"
    return json.loads(line)


def servers(process_tag) -> list:
    return [p for p in process_tag.tagged() if "-m flows.runtime.local_server" in p.command]


def record(env: dict[str, str]) -> Path:
    return Path(env["PREFECT_HOME"]) / "local-server" / "server.json"


def test_commands_share_one_server_that_stays_while_used_and_stops_itself_once_idle(shell_env, process_tag):
    first = start(shell_env, hold=15.0, idle=1.0)
    server = server_of(first)
    held_since = time.monotonic()
    assert [p.pid for p in servers(process_tag)] == [server["pid"]]

    second = start(shell_env, hold=0.0, idle=1.0)
    assert server_of(second) == server, "the next command uses the same server"
    assert second.wait(timeout=60) == 0, second.stderr.read()
    time.sleep(max(0.0, held_since + 4.0 - time.monotonic()))
    assert [p.pid for p in servers(process_tag)] == [server["pid"]], \
        "a server in use is never stopped, however long its idle time passed meanwhile"

    assert first.wait(timeout=60) == 0, first.stderr.read()
    wait_until(lambda: not servers(process_tag), "the server to stop once idle", timeout=20)
    assert not record(shell_env).exists(), "it removed its record"


def test_the_server_stops_by_itself_after_the_command_that_started_it_is_sigkilled(shell_env, process_tag):
    starter = start(shell_env, hold=600.0, idle=1.0)
    server = server_of(starter)
    starter.send_signal(signal.SIGKILL)
    starter.wait(timeout=30)
    assert [p.pid for p in servers(process_tag)] == [server["pid"]], "killing its starter does not kill it"
    wait_until(lambda: not servers(process_tag), "the server to stop once idle after its starter's SIGKILL",
               timeout=30)
    assert process_tag.wait_gone(10) == []


def test_two_commands_starting_at_once_start_one_server(shell_env, process_tag, tmp_path):
    go = tmp_path / "go"
    racers = [start(shell_env, hold=3.0, idle=1.0, go=go) for _ in range(2)]
    time.sleep(1.0)              # both are waiting at the start line
    go.touch()
    first, second = (server_of(p) for p in racers)
    assert first == second, "both use one server"
    assert [p.pid for p in servers(process_tag)] == [first["pid"]], "exactly one server process"
    for racer in racers:
        assert racer.wait(timeout=60) == 0, racer.stderr.read()
    wait_until(lambda: not servers(process_tag), "the server to stop once idle", timeout=20)
