"""Nothing a test session started outlives it, even when the session is SIGKILLed.

The first pytest process of a session (the xdist controller, or pytest itself with ``-n 0``) puts a session
tag into its own environment before anything starts, so every process started under it inherits it: the
xdist workers, Prefect's test servers, `capsearch server` and `serve`, background runs, Dask clusters, and
whatever they start in turn, wherever they were re-parented to. It then starts this watcher, without the tag.

The watcher polls its parent. When the session ends normally it is stopped, after the session has killed
what is still tagged; when the session dies without ending (SIGKILL, a CI timeout, an out-of-memory kill),
the watcher is re-parented, and it stops every tagged process itself: SIGTERM, then SIGKILL after a grace
period. A test's own ``process_tag`` (tests.fixtures.processes) still cleans up after each test; this is the
net under it.

``python -m tests.reaper TAG PID`` (what ``start`` runs; PID: the session's process, its parent).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

SESSION_VAR = "CAPSEARCH_TEST_SESSION"
POLL = 0.25            # seconds between looks at the parent
GRACE = 5.0            # seconds between SIGTERM and SIGKILL
REPO = Path(__file__).resolve().parents[1]


def stop_tagged(tag: str, grace: float = GRACE) -> list[int]:
    """SIGTERM every live process carrying ``tag``, SIGKILL those still alive after ``grace`` seconds;
    returns the pids that had to be killed."""
    from tests.fixtures.processes import ProcessTag

    session = ProcessTag(tag, SESSION_VAR)
    if not session.signal_all(signal.SIGTERM):
        return []
    session.wait_gone(grace)
    return session.signal_all(signal.SIGKILL)


def start() -> tuple[str, subprocess.Popen | None]:
    """In the session's first process: tag this process's environment and start the watcher. In a process
    that inherited a tag (an xdist worker, a pytest run by a test): the tag, and no watcher."""
    tag = os.environ.get(SESSION_VAR)
    if tag:
        return tag, None
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != SESSION_VAR}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    watcher = subprocess.Popen([sys.executable, "-m", "tests.reaper", tag, str(os.getpid())], cwd=REPO, env=env,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    os.environ[SESSION_VAR] = tag
    return tag, watcher


def finish(tag: str, watcher: subprocess.Popen | None) -> None:
    """At the session's normal end: stop what is still tagged, then the watcher."""
    if watcher is None:
        return
    stop_tagged(tag)
    watcher.terminate()
    try:
        watcher.wait(timeout=10)
    except subprocess.TimeoutExpired:
        watcher.kill()
        watcher.wait()


def watch(tag: str, parent: int) -> None:
    """Sweep ``tag`` once ``parent`` is no longer this process's parent (given, not read at start: the session
    may die before this process has started)."""
    # the session's end stops this watcher with SIGTERM: end quietly, leaving the sweep to the session
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # a Ctrl-C to the terminal is the session's to handle
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while os.getppid() == parent:
        time.sleep(POLL)
    killed = stop_tagged(tag)
    if killed:
        print(f"tests.reaper: the test session (pid {parent}) ended without cleaning up; "
              f"killed {len(killed)} process(es) it had started", file=sys.stderr)


if __name__ == "__main__":
    watch(sys.argv[1], int(sys.argv[2]))
