"""One run per workspace at a time: an OS-level lock on ``<workspace>/run.lock``.

The process that runs stages holds an exclusive ``flock`` on the lock file for as long as the
run lasts. The kernel releases it when the process ends, however it ends, so a run that was
killed (SIGKILL, the out-of-memory killer, a power cut) never blocks the next one: there is
nothing to clean up but the run's record, which the next run marks ``crashed``
(``pipeline.runs.mark_crashed``). The lock file also says who holds it (the owner of
``pipeline.run_owner``), for the moment between taking the lock and recording the run.

A second run refuses at once with :class:`WorkspaceBusy`, whose message names the running one
(what, who started it, since when, how far it got), or waits its turn (``wait=True``).

The lock's truth is the running process, not the file: a lock file deleted (or replaced) while a run
holds it lets the next process lock a new file, so whoever takes the lock also asks the run's record
(``alive_run``: a run recorded as going on by a process that still runs) and refuses or waits as for a
held lock. Two runs started in the same instant: the loser may look before the winner has said who it
is (in the lock file, then in the store); it waits a moment for that, and failing it names the process
that holds the lock as the kernel lists it (``/proc/locks``: pid and command line).

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
from pipeline.run_owner import current_owner, owner_state

LOCK_NAME = "run.lock"
WAIT_POLL = 0.5
HOLDER_PATIENCE = 3.0      # seconds a refused run waits for the holder to say who it is
_held: set[Path] = set()   # workspaces whose run lock a RunLock of this process holds


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
    """The run lock of one workspace. Not re-entrant: acquire once, release once.

    ``alive_run()`` describes a run that the workspace's record says is going on in a live process (None: no
    such run); with it, taking the lock is not enough to run (see the module)."""

    def __init__(self, root: str | Path, alive_run: Callable[[], str | None] | None = None):
        self.root = Path(root)
        self.path = lock_path(root)
        self.alive_run = alive_run
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, details: dict | None = None) -> bool:
        """Take the lock if it is free and no live run is recorded (never blocks); write who holds it into the
        file."""
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
        try:
            if self.alive_run is not None and self.alive_run() is not None:
                self.release()          # the lock file was deleted under a run that goes on
                return False
        except BaseException:
            self.release()
            raise
        _held.add(self.root.resolve())
        record = json.dumps({"owner": json.loads(current_owner()), "since": time.time(), **(details or {})},
                            sort_keys=True).encode()
        try:     # written over the old text, then cut to length: a reader never sees the file empty
            os.pwrite(fd, record, 0)
            os.ftruncate(fd, len(record))
        except OSError:
            pass   # the details are a courtesy; the lock is what counts
        return True

    def acquire(self, *, wait: bool = False, details: dict | None = None,
                describe: Callable[[], str] | None = None, on_wait: Callable[[str], None] | None = None,
                cancel: threading.Event | None = None, poll: float = WAIT_POLL) -> None:
        """Take the lock; when another run holds it, raise :class:`WorkspaceBusy` or (``wait``) wait for it.

        ``describe()`` names the running run (for the message; default :meth:`describe_holder`);
        ``on_wait(description)`` is called once when waiting starts; setting ``cancel`` gives up waiting
        (:class:`WaitCancelled`).
        """
        if self.try_acquire(details):
            return
        description = (describe or self.describe_holder)()
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
        _held.discard(self.root.resolve())
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

    def describe_holder(self, patience: float = HOLDER_PATIENCE) -> str:
        """The run that holds the workspace, by the best witness: the store's record of a live run, else what
        a live holder wrote into the lock file (both may come an instant after the lock: waited for up to
        ``patience`` seconds), else the process the kernel lists as holding the lock."""
        deadline = time.monotonic() + patience
        while True:
            recorded = self.alive_run() if self.alive_run is not None else None
            if recorded:
                return recorded
            h = self.holder() or {}
            if h.get("owner") and owner_state(json.dumps(h["owner"])) == "alive":
                return self._described(h)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        pid = self.holder_pid()
        if pid is not None:
            return f"pid {pid} (`{_command(pid)}`), which holds {self.path} and has not said what it runs"
        return "a capsearch process holds its run lock"

    def holder_pid(self) -> int | None:
        """The process holding the flock on the lock file, from the kernel's list of locks (Linux), or None."""
        try:
            st = os.stat(self.path)
            with open("/proc/locks", encoding="ascii", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return None
        where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in lines:
            parts = line.split()
            # "1: FLOCK  ADVISORY  WRITE 12345 00:2f:123456 0 EOF" (blocked waiters have "->" after the number)
            if "FLOCK" in parts and where in parts and "->" not in parts:
                try:
                    pid = int(parts[parts.index(where) - 1])
                except ValueError:
                    continue
                if pid > 0:
                    return pid
        return None

    @staticmethod
    def _described(h: dict) -> str:
        owner = h.get("owner") or {}
        since = h.get("since")
        when = f" at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
        return (f"{h.get('what') or 'a run'}, started by {h.get('started_by') or 'capsearch'} "
                f"(pid {owner.get('pid')} on {owner.get('host')}){when}, starting")

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_in_this_process(root: str | Path) -> bool:
    """Whether a run of this process holds the workspace's lock (a run this process recorded as going on, but
    whose lock it does not hold, is a record it failed to finish, not a run)."""
    return Path(root).resolve() in _held


def _command(pid: int) -> str:
    """A process's command line as typed (``python -m capsearch -w ws run``), or ``?``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return "?"
    text = " ".join(" ".join(args).split()) or "?"      # one line, whatever the arguments hold
    return text if len(text) <= 120 else text[:117] + "..."
