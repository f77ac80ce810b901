"""Run a Python module as a child that stops when the process that started it dies, even by SIGKILL.

    python -m flows.runtime.parent_watch PARENT_PID MODULE [ARG ...]

runs ``python -m MODULE ARG ...`` in this very process (``runpy``), with one daemon
thread that polls ``os.getppid()``. When the parent is gone (this process was
re-parented to init or to a subreaper), the thread asks the server to shut down
with SIGTERM (uvicorn and ``prefect server start`` shut down gracefully on it) and,
if it is still there after ``GRACE_SECONDS``, kills it. When this process leads its
own process group (started with ``start_new_session``), the whole group is
signalled, so anything it started goes too.

Polling, not ``prctl(PR_SET_PDEATHSIG)``: the death signal fires when the *thread*
that started the child exits, and capsearch starts servers from worker threads
(Prefect's client, the TUI's run worker); it also needs a ``preexec_fn``, which is
not safe in a threaded parent. The parent is passed explicitly so that a parent
that died before this module started is noticed too.

Standard library only: it runs before the server imports anything.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

POLL_SECONDS = 0.25
GRACE_SECONDS = 10.0


def _signal_self(sig: int) -> None:
    try:
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), sig)
        else:
            os.kill(os.getpid(), sig)
    except ProcessLookupError:
        pass


def stop_when_orphaned(parent: int, poll: float = POLL_SECONDS, grace: float = GRACE_SECONDS) -> None:
    """Block until ``parent`` is no longer this process's parent, then stop this process (and its group)."""
    while os.getppid() == parent:
        time.sleep(poll)
    _signal_self(signal.SIGTERM)
    time.sleep(grace)
    _signal_self(signal.SIGKILL)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m flows.runtime.parent_watch PARENT_PID MODULE [ARG ...]")
    parent, module, args = int(argv[0]), argv[1], argv[2:]
    if os.getppid() != parent:
        sys.exit(f"flows.runtime.parent_watch: parent {parent} is gone; not starting {module}")
    threading.Thread(target=stop_when_orphaned, args=(parent,), name="parent-watch", daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
