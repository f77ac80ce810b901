"""Starting the app in a real terminal: quiet defaults, photos set up before Textual owns the terminal,
and library output sent to ``<workspace>/logs/tui.log`` instead of the screen."""
from __future__ import annotations

import os
import sys
from pathlib import Path

QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def prepare_terminal(image_mode: str) -> None:
    """Truecolor under tmux/screen (which down-sample it if the outer terminal cannot), and textual-image's
    terminal queries done now: they cannot run once Textual reads the keyboard."""
    if (os.environ.get("TMUX") or os.environ.get("TERM", "").startswith("screen")) and not os.environ.get("COLORTERM"):
        os.environ["COLORTERM"] = "truecolor"
    if image_mode != "none":
        import textual_image.widget  # noqa: F401 - queries the terminal once, at import


def run_tui(workspace: str | Path | None = None, *, image_mode: str | None = None) -> int:
    """Run the TUI on ``workspace`` (default: the default workspace) until the user quits."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from pipeline.workspace import Workspace
    from tui.app import CapsearchApp, default_image_mode
    from tui.quiet import TerminalIsolation, isolated_driver, route_library_logging

    ws = Workspace(workspace).require()   # never create a workspace at a mistyped path
    mode = image_mode or default_image_mode()
    prepare_terminal(mode)
    log_path = ws.root / "logs" / "tui.log"
    route_library_logging(log_path)
    if not TerminalIsolation.available():
        app = CapsearchApp(ws, image_mode=mode, log_path=log_path)
        app.run()
        report_exit(app, log_path)
        return app.return_code or 0
    with TerminalIsolation(log_path) as iso:
        app = CapsearchApp(ws, image_mode=mode, log_path=log_path, driver_class=isolated_driver(iso.terminal))
        app.run()
    report_exit(app, log_path)
    return app.return_code or 0


def report_exit(app, log_path: Path) -> None:
    if getattr(app, "run_cancelled_on_exit", False):
        print("capsearch tui: the run was cancelled; it stops after the batches in flight "
              "(finished batches are kept)", file=sys.stderr)
    if app.return_code:
        print(f"capsearch tui exited with an error; library output is in {log_path}", file=sys.stderr)
