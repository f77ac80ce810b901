"""Keep library output (Prefect, Dask, uvicorn, warnings) off the screen while the app runs.

Two layers:

* ``route_library_logging`` takes every console handler off the logging tree and sends records to a
  log file instead (and WARNING and above to a callback: the TUI's log pane). Prefect configures
  logging when it is imported, so the app calls this again after a run has imported it.
* ``TerminalIsolation`` points file descriptors 1 and 2 at the log file, so that anything writing
  to them directly (Prefect's temporary API server, Dask worker processes, C libraries) cannot
  draw over the screen; Textual writes to a private duplicate of the terminal instead.
"""
from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path
from typing import Callable, TextIO

_MARK = "_capsearch_tui"


class _CallbackHandler(logging.Handler):
    def __init__(self, callback: Callable[[logging.LogRecord], None], level: int = logging.WARNING):
        super().__init__(level)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.callback(record)
        except Exception:  # noqa: BLE001 - logging must never break the run
            pass


def _is_console(handler: logging.Handler) -> bool:
    """A handler that writes to a terminal stream (not a file, not an in-memory capture such as pytest's)."""
    return (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            and not isinstance(getattr(handler, "stream", None), io.StringIO))


def route_library_logging(log_path: Path | None, on_warning: Callable[[logging.LogRecord], None] | None = None) -> None:
    """Remove console handlers everywhere; records reaching the root logger (WARNING and above unless a
    library lowers its own level) go to ``log_path`` (if given) and to ``on_warning``."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in list(lg.handlers):
            if _is_console(h) and not getattr(h, _MARK, False):
                lg.removeHandler(h)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _MARK, False):
            root.removeHandler(h)
            h.close()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        setattr(fh, _MARK, True)
        root.addHandler(fh)
    if on_warning is not None:
        ch = _CallbackHandler(on_warning)
        setattr(ch, _MARK, True)
        root.addHandler(ch)
    logging.captureWarnings(True)


class TerminalIsolation:
    """While active, fds 1 and 2 go to ``log_path``; ``terminal`` is a private handle on the real terminal."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.terminal: TextIO | None = None
        self._saved: dict[int, int] = {}
        self._saved_streams: tuple[TextIO, TextIO] | None = None

    @staticmethod
    def available() -> bool:
        return os.name == "posix" and sys.__stderr__ is not None and sys.__stderr__.isatty()

    def __enter__(self) -> "TerminalIsolation":
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        term_fd = os.dup(2)
        self.terminal = os.fdopen(term_fd, "w", buffering=1, encoding="utf-8", errors="replace")
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for fd in (1, 2):
            self._saved[fd] = os.dup(fd)
            os.dup2(log_fd, fd)
        os.close(log_fd)
        # Python-level writes (tracebacks printed after the app exits) still reach the user.
        self._saved_streams = (sys.stdout, sys.stderr)
        sys.stderr = self.terminal
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass
        if self._saved_streams is not None:
            sys.stdout, sys.stderr = self._saved_streams
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._saved.clear()
        if self.terminal is not None:
            self.terminal.close()
            self.terminal = None

