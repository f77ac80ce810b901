"""Starting the app in a real terminal: quiet defaults, photos set up before Textual owns the terminal,
and library output sent to ``<workspace>/logs/tui.log`` instead of the screen."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tui.app import CapsearchApp

def prepare_terminal(image_mode: str) -> None:
    """Truecolor under tmux/screen (which down-sample it if the outer terminal cannot), and textual-image's
    terminal queries done now: they cannot run once Textual reads the keyboard."""
    if (os.environ.get("TMUX") or os.environ.get("TERM", "").startswith("screen")) and not os.environ.get("COLORTERM"):
        os.environ["COLORTERM"] = "truecolor"
    if image_mode != "none":
        import textual_image.widget  # noqa: F401 - queries the terminal once, at import


def run_tui(workspace: str | Path | None = None, *, image_mode: str | None = None) -> int:
    """Run the TUI on ``workspace`` (default: the default workspace) until the user quits.

    Returns the exit code: 0, 1 after an error, 128 + N when signal N (SIGTERM, SIGINT, SIGHUP: a
    closed terminal or a dropped SSH session) closed the app. A run the app started goes on either way:
    it is a process of its own (or a deployment run) that writes its progress to the store, so
    `capsearch status --follow` or the next TUI picks it up, and `capsearch cancel` stops it.
    """
    from pipeline.environment import quiet_defaults

    quiet_defaults()
    from pipeline import shutdown
    from pipeline.workspace import Workspace
    from tui.app import CapsearchApp, default_image_mode
    from tui.quiet import TerminalIsolation, isolated_driver, route_library_logging

    ws = Workspace(workspace).require()   # never create a workspace at a mistyped path
    mode = image_mode or default_image_mode(ws.config.tui.images)
    prepare_terminal(mode)
    log_path = ws.root / "logs" / "tui.log"
    route_library_logging(log_path)
    with shutdown.stop_on_signals():
        if not TerminalIsolation.available():
            app = CapsearchApp(ws, image_mode=mode, log_path=log_path)
            with shutdown.cancellable(on_stop=lambda signum: close_on_signal(app, signum)):
                app.run()
        else:
            with TerminalIsolation(log_path) as iso:
                app = CapsearchApp(ws, image_mode=mode, log_path=log_path, driver_class=isolated_driver(iso.terminal))
                terminal_fd = iso.terminal.fileno() if iso.terminal is not None else None
                with shutdown.cancellable(on_stop=lambda signum: close_on_signal(app, signum, terminal_fd)):
                    app.run()
        report_exit(app, log_path)
        signum = shutdown.stop_requested()
    return shutdown.exit_code(signum) if signum is not None else app.return_code or 0


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
