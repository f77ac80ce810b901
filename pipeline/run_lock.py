"""One run per workspace at a time: an OS-level lock on ``<workspace>/run.lock``.

The process that runs stages holds an exclusive ``flock`` on the lock file for as long as the
run lasts. The kernel releases it when the process ends, however it ends, so a run that was
killed (SIGKILL, the out-of-memory killer, a power cut) never blocks the next one: there is
nothing to clean up but the run's record, which the next run marks ``crashed``
(``pipeline.runs.mark_crashed``). The lock file also says who holds it (the owner of
``pipeline.run_owner``), for the moment between taking the lock and recording the run.

A second run refuses at once with :class:`WorkspaceBusy`, whose message names the running one
(what, who started it, since when, how far it got), or waits its turn (``wait=True``).

Locks are per open file: two runs in one process exclude each other too. The lock file's
descriptor is not inherited by child processes (Python opens files non-inheritable), so a
child that outlives the run cannot hold the lock. flock is local to a machine: a workspace
shared over a network file system between machines is not protected.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from pipeline.errors import CapsearchError
from pipeline.run_owner import current_owner

LOCK_NAME = "run.lock"
WAIT_POLL = 0.5


class WorkspaceBusy(CapsearchError):
    """Another run holds the workspace."""

    def __init__(self, root: Path, description: str):
        self.root = root
        self.description = description
        super().__init__(f"another run is going on in {root}: {description}. `capsearch status --follow` watches it, "
                         "`capsearch cancel` stops it, `capsearch run --wait` waits for it to end")


class WaitCancelled(CapsearchError):
    """Waiting for the workspace was given up (a stop signal)."""


def lock_path(root: str | Path) -> Path:
    return Path(root) / LOCK_NAME


class RunLock:
    """The run lock of one workspace. Not re-entrant: acquire once, release once."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = lock_path(root)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, details: dict | None = None) -> bool:
        """Take the lock if it is free (never blocks); write who holds it into the file."""
        if self._fd is not None:
            raise RuntimeError("the run lock is held already")
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        record = {"owner": json.loads(current_owner()), "since": time.time(), **(details or {})}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record, sort_keys=True).encode(), 0)
        except OSError:
            pass   # the details are a courtesy; the lock is what counts
        return True

    def acquire(self, *, wait: bool = False, details: dict | None = None,
                describe: Callable[[], str] | None = None, on_wait: Callable[[str], None] | None = None,
                cancel: threading.Event | None = None, poll: float = WAIT_POLL) -> None:
        """Take the lock; when another run holds it, raise :class:`WorkspaceBusy` or (``wait``) wait for it.

        ``describe()`` names the running run (for the message); ``on_wait(description)`` is called once
        when waiting starts; setting ``cancel`` gives up waiting (:class:`WaitCancelled`).
        """
        if self.try_acquire(details):
            return
        description = (describe or self.holder_description)()
        if not wait:
            raise WorkspaceBusy(self.root, description)
        if on_wait is not None:
            on_wait(description)
        while not self.try_acquire(details):
            if cancel is not None and cancel.wait(poll):
                raise WaitCancelled(f"stopped waiting for the run going on in {self.root}")
            if cancel is None:
                time.sleep(poll)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def holder(self) -> dict | None:
        """What the holder wrote into the lock file (may be stale or empty when nobody holds it)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            return None

    def holder_description(self) -> str:
        """The holder as its lock file names it (for the moment before its run is recorded in the store)."""
        h = self.holder() or {}
        owner = h.get("owner") or {}
        if not owner:
            return "a capsearch process holds its run lock"
        since = h.get("since")
        when = f" at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
        return (f"{h.get('what') or 'a run'}, started by {h.get('started_by') or 'capsearch'} "
                f"(pid {owner.get('pid')} on {owner.get('host')}){when}, starting")

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
