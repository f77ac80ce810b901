"""A test session that dies without ending leaves nothing running (tests/reaper.py).

A stand-in for a pytest session (a process that calls ``reaper.start`` as tests/conftest.py does) starts a
child that ignores SIGTERM and a daemon that detaches into a session of its own, as `capsearch serve` does;
then the stand-in is SIGKILLed, as a CI timeout would, or ends normally.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.reaper import SESSION_VAR

REPO = Path(__file__).resolve().parents[1]
SESSION = """
import json, subprocess, sys, time
from tests import reaper
tag, watcher = reaper.start()
stubborn = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE, text=True)
daemon = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"],
    start_new_session=True, stdout=subprocess.PIPE, text=True)
assert stubborn.stdout.readline() == daemon.stdout.readline() == "up\\n"
print(json.dumps({"tag": tag, "watcher": watcher.pid, "children": [stubborn.pid, daemon.pid]}), flush=True)
if sys.argv[1] == "end":
    reaper.finish(tag, watcher)
    print("ended", flush=True)
else:
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(how: str) -> tuple[subprocess.Popen, dict]:
    env = {k: v for k, v in os.environ.items() if k != SESSION_VAR}     # a session of its own, not this one's
    env["PYTHONPATH"] = str(REPO)
    session = subprocess.Popen([sys.executable, "-c", SESSION, how], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               text=True)
    started = json.loads(session.stdout.readline())
    return session, started


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def test_a_sigkilled_session_leaves_no_process_behind():
    session, started = _start("kill")
    pids = [*started["children"], started["watcher"]]
    try:
        assert all(_alive(p) for p in pids)
        session.kill()
        session.wait(timeout=10)
        # the stubborn child ignores SIGTERM: SIGKILL after the grace period
        assert _wait_gone(pids, timeout=30) == [], "still running after the session was SIGKILLed"
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_session_that_ends_stops_what_it_started_and_its_watcher():
    session, started = _start("end")
    pids = [*started["children"], started["watcher"]]
    try:
        assert session.stdout.readline() == "ended\n"
        assert session.wait(timeout=30) == 0
        assert _wait_gone(pids, timeout=5) == []
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_this_session_tags_what_it_starts():
    """The suite's own session carries a tag, and a process a test starts inherits it."""
    tag = os.environ.get(SESSION_VAR)
    assert tag
    out = subprocess.run([sys.executable, "-c", f"import os; print(os.environ['{SESSION_VAR}'])"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == tag
