"""Starting the app in a real terminal and ending the process when it closes: quiet defaults, the terminal asked
what it can draw before Textual owns it (``tui.terminal``; keys typed meanwhile reach the app), library output sent
to ``<workspace>/logs/tui.log`` instead of the screen, and an exit that waits for nothing in the background."""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from tui.app import CapsearchApp
    from tui.terminal import TerminalAnswers


def prepare_terminal(image_mode: str) -> tuple[str, TerminalAnswers]:
    """Truecolor under tmux/screen (which down-sample it if the outer terminal cannot); the terminal asked, in one
    round trip, what drawing photos the ``image_mode`` way needs to know; the image library imported without its
    own questions (they cannot run once Textual reads the keyboard, and they lost keys typed at start-up). Returns
    the way photos are drawn (``auto`` resolved to what the terminal answered) and the answers (with the keys
    typed meanwhile)."""
    from tui.terminal import TerminalAnswers, ask_terminal, import_image_library

    if (os.environ.get("TMUX") or os.environ.get("TERM", "").startswith("screen")) and not os.environ.get("COLORTERM"):
        os.environ["COLORTERM"] = "truecolor"
    if image_mode == "none":
        return image_mode, TerminalAnswers()
    stdin, stdout = sys.__stdin__, sys.__stdout__
    asked = stdin is not None and stdout is not None and stdin.isatty() and stdout.isatty()
    answers = (ask_terminal(stdin.fileno(), stdout.fileno(), graphics=image_mode == "auto", cell=True)
               if asked else TerminalAnswers())
    import_image_library(answers)
    return (answers.image_mode if asked and image_mode == "auto" else image_mode), answers


def run_tui(workspace: str | Path | None = None, *, image_mode: str | None = None) -> int:
    """Run the TUI on ``workspace`` (default: the default workspace) until the user quits.

    Returns the exit code: 0, 1 after an error, 128 + N when signal N (SIGTERM, SIGINT, SIGHUP: a
    closed terminal or a dropped SSH session) closed the app. A run the app started goes on either way:
    it is a process of its own (or a deployment run) that writes its progress to the store, so
    `capsearch status --follow` or the next TUI picks it up, and `capsearch cancel` stops it.
    """
    from pipeline.environment import quiet_defaults

    quiet_defaults()
    from flows.runtime.settings import apply_settings
    from pipeline import shutdown

    apply_settings()
    from pipeline.workspace import Workspace
    from tui.app import CapsearchApp, default_image_mode
    from tui.quiet import TerminalIsolation, route_library_logging
    from tui.terminal import terminal_driver

    ws = Workspace(workspace).require()   # never create a workspace at a mistyped path
    mode, answers = prepare_terminal(image_mode or default_image_mode(ws.config.tui.images))
    log_path = ws.root / "logs" / "tui.log"
    route_library_logging(log_path)
    with shutdown.stop_on_signals():
        isolated = TerminalIsolation.available()
        with TerminalIsolation(log_path) if isolated else nullcontext() as iso:
            terminal = iso.terminal if iso is not None else None
            app = CapsearchApp(ws, image_mode=mode, log_path=log_path,
                               driver_class=terminal_driver(terminal, answers.typed))
            terminal_fd = terminal.fileno() if terminal is not None else None
            with shutdown.cancellable(on_stop=lambda signum: close_on_signal(app, signum, terminal_fd)):
                run_app(app)
        report_exit(app, log_path)
        signum = shutdown.stop_requested()
    return shutdown.exit_code(signum) if signum is not None else app.return_code or 0


def run_app(app: CapsearchApp) -> None:
    """``app.run()`` on an event loop of its own, closed without waiting for its thread pool: a worker still reading
    the store or a server when the app closes is abandoned, not waited for (``asyncio.run``, which ``App.run`` uses
    otherwise, joins the pool's threads before it returns)."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        app.run(loop=loop)
    finally:
        loop.close()      # shuts the default executor down with wait=False


def main(workspace: str | Path | None = None, *, image_mode: str | None = None) -> NoReturn:
    """``capsearch tui`` and ``python -m tui``: run the TUI, then end the process at once (``end_process``)."""
    end_process(run_tui(workspace, image_mode=image_mode))


def end_process(code: int) -> NoReturn:
    """End the process with ``code`` now that the app has closed, without the interpreter's clean-up: work still
    going on in the background (the search preload's model load, workers reading the store, the run follower) is
    abandoned instead of waited for, and the loaded model libraries are not torn down one by one (that took
    seconds). What the TUI started that outlives it (a background run) is a process of its own and goes on;
    nothing else it started keeps state outside the process. The log and the standard streams are flushed first."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass   # the terminal is gone (SIGHUP)
    logging.shutdown()
    os._exit(code)


def close_on_signal(app, signum: int, terminal_fd: int | None = None, wait: float = 30.0) -> None:
    """Close the app from the stop thread; on SIGHUP the terminal is gone, so the app draws to /dev/null."""
    import signal
    import time

    from pipeline import shutdown

    if signum == signal.SIGHUP and terminal_fd is not None:
        shutdown.detach_terminal(terminal_fd)
    deadline = time.monotonic() + wait
    while not app.is_running and app.return_code is None and time.monotonic() < deadline:
        time.sleep(0.05)   # a signal while the app is still starting
    if app.is_running:
        app.call_from_thread(app.exit, None, shutdown.exit_code(signum))


def report_exit(app: CapsearchApp, log_path: Path) -> None:
    from pipeline.shutdown import signal_name, stop_requested

    signum = stop_requested()
    lines = []
    if signum is not None:
        lines.append(f"capsearch tui: closed by {signal_name(signum)}")
    running = app.run_going_on_at_exit
    if running is not None:
        where = f" -w {app.ws.root}"
        lines.append(f"capsearch tui: the run goes on without the TUI ({running.what}, pid {running.pid}); "
                     f"`capsearch{where} status --follow` or the TUI shows it, `capsearch{where} cancel` stops it")
    if app.return_code and signum is None:
        lines.append(f"capsearch tui exited with an error; library output is in {log_path}")
    for line in lines:
        try:
            print(line, file=sys.stderr)
        except OSError:
            pass   # the terminal is gone (SIGHUP)
