"""The capsearch terminal UI: one app, five screens (modes), a help screen, all by keyboard."""
from __future__ import annotations

import os
from pathlib import Path

from textual import on
from textual.app import App
from textual.binding import Binding

from pipeline.workspace import Workspace
from tui.messages import OpenInSearch
from tui.widgets.nav import SCREENS
from tui.widgets.photo import IMAGE_MODES


def default_image_mode() -> str:
    """Half-blocks under tmux/screen (graphics protocols do not pass through), else the best the terminal has."""
    if os.environ.get("CAPSEARCH_TUI_IMAGES") in IMAGE_MODES:
        return os.environ["CAPSEARCH_TUI_IMAGES"]
    if os.environ.get("TMUX") or os.environ.get("TERM", "").startswith("screen"):
        return "halfcell"
    return "auto"


def _mode_factory(mode: str):
    def make():
        from tui.screens import captions, evaluation, pipeline, runs, search

        return {
            "pipeline": pipeline.PipelineScreen, "captions": captions.CaptionsScreen, "search": search.SearchScreen,
            "evaluation": evaluation.EvaluationScreen, "runs": runs.RunsScreen,
        }[mode]()

    return make


class CapsearchApp(App):
    """``CapsearchApp(workspace)``: browse and run a capsearch workspace."""

    CSS_PATH = "capsearch.tcss"
    TITLE = "capsearch"
    ENABLE_COMMAND_PALETTE = False
    MODES = {mode: _mode_factory(mode) for _, mode, _ in SCREENS}
    DEFAULT_MODE = "pipeline"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    BINDINGS = [
        *[Binding(key, f"switch_screen_mode('{mode}')", label, show=False) for key, mode, label in SCREENS],
        Binding("question_mark,f1", "help", "Help", tooltip="this list of keys"),
        Binding("q", "quit", "Quit", tooltip="leave the app (a run in progress is cancelled)"),
    ]

    def __init__(self, workspace: Workspace | str | Path, *, image_mode: str | None = None,
                 log_path: Path | None = None, prefect_api_url: str | None = None, timings: bool = True,
                 driver_class=None) -> None:
        """``timings=False`` leaves per-search timings off the screen (for reproducible screenshots)."""
        super().__init__(driver_class=driver_class)
        self.timings = timings
        self.data_version = 0     # bumped when a run changes the workspace; screens reload when shown again
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.image_mode = image_mode or default_image_mode()
        self.log_path = log_path
        self.prefect_api_url = prefect_api_url
        self.sub_title = f"{self.ws.name} · {self.ws.config.profile}"

    def action_switch_screen_mode(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    @on(OpenInSearch)
    async def _open_in_search(self, message: OpenInSearch) -> None:
        await self.switch_mode("search")
        self.screen.show_query(message.query, message.method)  # type: ignore[attr-defined]
