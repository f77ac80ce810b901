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


def process_start(pid: int) -> str | None:
    """The process's start time as the kernel records it, or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None   # field 22 of proc(5); fields[0] is field 3


@lru_cache(maxsize=1)
def _host() -> str:
    return socket.gethostname()


def current_owner() -> str:
    """This process as a stage run's owner (JSON)."""
    pid = os.getpid()
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
    if not pid_alive(pid):
        return "dead"
    if start is not None:
        now = process_start(pid)
        if now is not None and now != start:
            return "dead"        # the pid belongs to another process now
    return "alive"
