"""Stopping on SIGTERM, SIGINT and SIGHUP: the one place the CLI and the TUI turn signals into a clean exit.

Inside :func:`stop_on_signals` (the ``capsearch`` command and the TUI enter it in the main thread):

* The **first** stop signal cancels every run of this process (``flows.run_context`` registers each
  run's cancel event here with :func:`track`): a run stops between batches, the batches in flight
  finish and are kept, its stage run is recorded as ``cancelled`` and its Prefect flow runs end
  Cancelled. Hooks given to :func:`cancellable` run too (the TUI closes its app). When nothing
  is there to stop that way (``capsearch server`` waiting, the demo world being drawn), the main
  thread gets :class:`Stopped` (a ``KeyboardInterrupt``), so ``finally`` blocks stop what was started.
* A **second** stop signal abandons the batches in flight: the :func:`on_abandon` callbacks run
  (stage runs recorded as cancelled, servers stopped) and the process exits at once. :func:`abandon`
  does the same for another cause (the Prefect server a run reports to died: ``flows.runtime.server_watch``),
  recording the run as failed with that cause.
* SIGHUP means the terminal is gone: the terminal's file descriptors are pointed at ``/dev/null`` so
  that late output cannot fail the exit. A signal ignored when capsearch started (``nohup``, or
  SIGINT of a background job) stays ignored.

The exit code says which signal stopped the command: 128 + its number (SIGHUP 129, SIGINT 130,
SIGTERM 143), whether it stopped cleanly or abandoned the batches in flight.

The signal handler itself only records the signal and hands it to a small daemon thread: setting
events, calling hooks and writing to the store happen there, never inside the handler, which may
have interrupted the main thread while it held a lock. Standard library only (and ``pipeline.states``).
"""
from __future__ import annotations

import contextvars
import os
import queue
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

from pipeline.states import Status

T = TypeVar("T")
STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
JOIN_SLICE = 0.25                  # how often a waiting main thread wakes up (signal handlers run between)


def exit_code(signum: int) -> int:
    """The conventional exit status of a command stopped by ``signum``: 128 + its number."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Stopped(KeyboardInterrupt):
    """A stop signal ended the command (raised in the main thread)."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


@dataclass(frozen=True)
class Abandon:
    """Why the work in flight is given up and the process exits at once (what the abandon callbacks record)."""
    message: str                 # the run's and its stage run's message, and the line on the terminal
    status: Status = Status.CANCELLED    # how the run and the stage run in flight are recorded
    exit_code: int = 1
    api_alive: bool = True       # whether Prefect's API can still be told (flow runs marked Cancelled)
    line: str = ""               # the one line written to the terminal (default: "error: <message>")

    @classmethod
    def on_signal(cls, signum: int, again: int | None = None) -> "Abandon":
        """A second stop signal (``again``, default ``signum``): the first one's exit code, status cancelled."""
        again = signum if again is None else again
        return cls(f"abandoned on a second {signal_name(signum)}: the batches in flight were not finished "
                   "(finished batches are kept)", Status.CANCELLED, exit_code(signum),
                   line=f"capsearch: {signal_name(again)} again: stopping now; the batches in flight are "
                        "abandoned (finished batches are kept)")

    @classmethod
    def failure(cls, cause: str, *, api_alive: bool = True) -> "Abandon":
        """``cause`` ended the run: recorded failed, exit code 1."""
        return cls(f"{cause}; the batches in flight were not finished (finished batches are kept)", Status.FAILED, 1,
                   api_alive)


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.signum: int | None = None          # the first stop signal received
        self.count = 0
        self.cancels: list[threading.Event] = []
        self.hooks: list[Callable[[int], None]] = []
        self.abandon: list[Callable[[Abandon], None]] = []
        self.queue: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()   # put() is safe in a handler
        self.thread: threading.Thread | None = None
        self.previous: dict[int, Any] = {}
        self.depth = 0


_state = _State()


# -- what a stop signal reaches ---------------------------------------------------------------------------
def stop_requested() -> int | None:
    """The stop signal this process received, if any."""
    return _state.signum


def raise_if_stopped() -> None:
    if _state.signum is not None:
        raise Stopped(_state.signum)


def track(event: threading.Event) -> None:
    """Set ``event`` on the first stop signal (at once when one was already received)."""
    with _state.lock:
        _state.cancels.append(event)
    if _state.signum is not None:
        event.set()


def untrack(event: threading.Event) -> None:
    with _state.lock:
        if event in _state.cancels:
            _state.cancels.remove(event)


@contextmanager
def cancellable(on_stop: Callable[[int], None] | None = None) -> Iterator[threading.Event]:
    """An event set by the first stop signal; ``on_stop(signum)`` is called then (from another thread)."""
    event = threading.Event()
    track(event)
    if on_stop is not None:
        with _state.lock:
            _state.hooks.append(on_stop)
        if _state.signum is not None:
            _call(on_stop, _state.signum)
    try:
        yield event
    finally:
        untrack(event)
        if on_stop is not None:
            with _state.lock:
                if on_stop in _state.hooks:
                    _state.hooks.remove(on_stop)


def handling_signals() -> bool:
    """Whether this process is inside :func:`stop_on_signals` (the CLI, the TUI, a deployment run): then it may be
    abandoned (:func:`abandon`); a library caller's process is not."""
    return _state.depth > 0


def add_abandon(callback: Callable[[Abandon], None]) -> Callable[[], None]:
    """Run ``callback(why)`` if the work in flight is abandoned (a second stop signal, :func:`abandon`); returns
    its remover."""
    with _state.lock:
        _state.abandon.append(callback)

    def remove() -> None:
        with _state.lock:
            if callback in _state.abandon:
                _state.abandon.remove(callback)

    return remove


@contextmanager
def on_abandon(callback: Callable[[Abandon], None]) -> Iterator[None]:
    remove = add_abandon(callback)
    try:
        yield
    finally:
        remove()


def run_cancellable(work: Callable[[threading.Event], T], on_stop: Callable[[int], None] | None = None) -> T:
    """``work(cancel)`` in a worker thread while this thread waits, so stop signals reach it as ``cancel``.

    Prefect installs its own SIGTERM handler around a flow run in the main thread (it marks the run
    Crashed and re-sends the signal, which skips every clean-up); in a worker thread it cannot, and the
    main thread stays free to handle the signal.
    """
    box: dict[str, Any] = {}
    context = contextvars.copy_context()   # the caller's settings (e.g. Prefect's temporary_settings) go along
    with cancellable(on_stop) as cancel:
        def target() -> None:
            try:
                box["value"] = context.run(work, cancel)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the waiting thread
                box["error"] = exc

        worker = threading.Thread(target=target, name="capsearch-run")
        worker.start()
        while worker.is_alive():
            worker.join(JOIN_SLICE)
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- the handler --------------------------------------------------------------------------------------------
def request_stop(signum: int) -> None:
    """Act as if ``signum`` arrived (for code that receives a signal through another library's handler).

    Never raises: :class:`Stopped` is only raised by the real handler, in the main thread."""
    _record(signum)


def _record(signum: int) -> bool:
    first = _state.signum is None
    if first:
        _state.signum = signum
    _state.count += 1
    _state.queue.put((signum, first))
    return first


def _handle(signum: int, frame: Any) -> None:
    first = _record(signum)
    if first and not _state.cancels and not _state.hooks:
        raise Stopped(signum)


def _call(fn: Callable[[Any], None], arg: Any) -> None:
    try:
        fn(arg)
    except Exception:  # noqa: BLE001 - one failing hook must not keep the others from running
        pass


def detach_terminal(*extra_fds: int) -> None:
    """Point the terminal's descriptors (0, 1, 2 when they are terminals, and ``extra_fds``) at /dev/null."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    for fd in (0, 1, 2, *extra_fds):
        try:
            if fd in extra_fds or os.isatty(fd):
                os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


def abandon(why: Abandon) -> None:
    """Give up the work in flight: one line on the terminal, the abandon callbacks (newest first: stage runs and
    the run recorded as ``why`` says, servers stopped), then exit at once with ``why.exit_code``. Any thread."""
    try:
        os.write(2, ((why.line or f"error: {why.message}") + "\n").encode())
    except OSError:
        pass
    with _state.lock:
        callbacks = list(reversed(_state.abandon))
    for callback in callbacks:
        _call(callback, why)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(why.exit_code)


def _abandon(signum: int) -> None:
    abandon(Abandon.on_signal(_state.signum or signum, signum))


def _stopper() -> None:
    while True:
        signum, first = _state.queue.get()
        if not first:
            _abandon(signum)
        if signum == signal.SIGHUP:
            detach_terminal()
        with _state.lock:
            cancels, hooks = list(_state.cancels), list(_state.hooks)
        for event in cancels:
            event.set()
        for hook in hooks:
            _call(hook, signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Handle SIGTERM, SIGINT and SIGHUP as described above while inside (main thread; nestable)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.depth += 1
    if _state.depth == 1:
        if _state.thread is None or not _state.thread.is_alive():
            _state.thread = threading.Thread(target=_stopper, name="capsearch-stop", daemon=True)
            _state.thread.start()
        for sig in STOP_SIGNALS:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue
            _state.previous[sig] = previous
            signal.signal(sig, _handle)
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            for sig, previous in _state.previous.items():
                signal.signal(sig, previous)
            _state.previous.clear()
            _state.signum = None
            _state.count = 0
