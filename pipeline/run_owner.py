"""Which process runs a stage run, and whether it still does (so a run left ``running`` by a crash is found).

An owner is the host name, the pid and the process's start time (Linux: clock ticks since
boot from ``/proc/<pid>/stat``), so a pid reused by an unrelated process after a crash is not
taken for the run's owner.
"""
from __future__ import annotations

import json
import os
import socket
from functools import lru_cache
from typing import Literal

from pipeline.atomic import pid_alive


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()   # fields[0] is field 3 of proc(5), the state


def process_start(pid: int) -> str | None:
    """The process's start time as the kernel records it, or None where it cannot be read."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None   # field 22 of proc(5)


def is_zombie(pid: int) -> bool:
    """Whether the process has exited and waits for its parent to collect it (it runs nothing any more)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] in ("Z", "X")


@lru_cache(maxsize=1)
def _host() -> str:
    return socket.gethostname()


def current_owner() -> str:
    """This process as a stage run's owner (JSON)."""
    return owner_of(os.getpid())


def owner_of(pid: int) -> str:
    """Process ``pid`` of this host as an owner (JSON), e.g. a server this process has just started."""
    return json.dumps({"host": _host(), "pid": pid, "start": process_start(pid)}, sort_keys=True)


def owner_state(owner: str | None) -> Literal["alive", "dead", "unknown"]:
    """Whether the recorded owner still runs: ``unknown`` for another host or an unreadable record."""
    try:
        data = json.loads(owner or "")
        host, pid, start = data["host"], int(data["pid"]), data.get("start")
    except (ValueError, KeyError, TypeError):
        return "unknown"
    if host != _host():
        return "unknown"
    if not pid_alive(pid) or is_zombie(pid):
        return "dead"
    if start is not None:
        now = process_start(pid)
        if now is not None and now != start:
            return "dead"        # the pid belongs to another process now
    return "alive"


def signal_owner(owner: str | None, sig: int) -> bool:
    """Send ``sig`` to the recorded owner if it is still that very process (same host, pid and start time).

    The process is pinned with a pidfd before its start time is checked, so a pid reused after the
    check cannot receive the signal. Returns whether it was sent.
    """
    import signal as _signal

    try:
        data = json.loads(owner or "")
        host, pid, start = data["host"], int(data["pid"]), data.get("start")
    except (ValueError, KeyError, TypeError):
        return False
    if host != _host():
        return False
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        if is_zombie(pid) or (start is not None and process_start(pid) != start):
            return False
        _signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
