"""The capsearch terminal UI: one app, five screens (modes), a help screen, all by keyboard."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on
from textual.app import App
from textual.binding import Binding
from textual.signal import Signal
from textual.worker import Worker, WorkerState

from pipeline.workspace import Workspace
from tui.failures import WorkerFailure
from tui.messages import OpenInSearch, OpenLike
from tui import registry
from tui.screens.base import WIDE, CapsearchScreen
from tui.search_loader import SearchLoader
from tui.widgets.photo import IMAGE_MODES

if TYPE_CHECKING:
    from pipeline.runs import RunInfo
    from tui.screens.search import SearchScreen


def default_image_mode(configured: str = "") -> str:
    """``tui.images`` when set; else half-blocks under tmux/screen (graphics protocols do not pass through),
    else the best the terminal has."""
    if configured in IMAGE_MODES:
        return configured
    if os.environ.get("TMUX") or os.environ.get("TERM", "").startswith("screen"):
        return "halfcell"
    return "auto"


def _mode_factory(entry):
    def make():
        return entry.load()()

    return make


class CapsearchApp(App):
    """``CapsearchApp(workspace)``: browse and run a capsearch workspace."""

    CSS_PATH = "capsearch.tcss"
    TITLE = "capsearch"
    ENABLE_COMMAND_PALETTE = False
    MODES = {entry.name: _mode_factory(entry) for entry in registry.MODES}   # a screen's module: imported when shown
    DEFAULT_MODE = registry.DEFAULT_MODE
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    BINDINGS = [
        *[Binding(e.key, f"switch_screen_mode('{e.name}')", e.title, show=False) for e in registry.MODES],
        Binding("question_mark,f1", "help", "Help", tooltip="this list of keys"),
        Binding("q", "quit", "Quit", tooltip="leave the app (a run going on keeps going; x on the Pipeline screen cancels it)"),
    ]

    def __init__(self, workspace: Workspace | str | Path, *, image_mode: str | None = None,
                 log_path: Path | None = None, prefect_api_url: str | None = None, timings: bool = True,
                 driver_class=None, preload_search: bool = True) -> None:
        """``timings=False`` leaves per-search timings off the screen (for reproducible screenshots);
        ``preload_search`` starts loading the search index (and the text model) in the background once the
        Pipeline screen has shown the workspace's stages."""
        super().__init__(driver_class=driver_class)
        self.timings = timings
        self.data_version = 0     # bumped when a run changes the workspace; screens reload when shown again
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.image_mode = image_mode or default_image_mode(self.ws.config.tui.images)
        self.log_path = log_path
        self.prefect_api_url = prefect_api_url
        self.sub_title = f"{self.ws.name} · {self.ws.config.profile}"
        self.search_loader = SearchLoader(self.ws)
        self.preload_search = preload_search
        # the run going on in the workspace when the app closed (it goes on: tui.launch.report_exit says so)
        self.run_going_on_at_exit: RunInfo | None = None
        self.failures: list[WorkerFailure] = []       # what failed, each once, oldest first (the Problems pane)
        self.failed: Signal[WorkerFailure] = Signal(self, "worker-failed")

    def preload_search_index(self) -> None:
        """Start loading the search index (and the text model) in the background, so that the first query on
        the Search screen does not wait for it. The Pipeline screen, the one the app opens on, calls this once
        it has read the workspace's stages: started with the app, the loader's imports and index build
        competed with that read for the interpreter and the stage counts appeared four times later on a
        10k-photo workspace (docs/benchmarks.md, TUI start-up)."""
        if not self.preload_search:
            return
        try:
            self.search_loader.start(self.ws.config.search.scope, self.data_version)
        except Exception:  # noqa: BLE001 - the Search screen reports what went wrong when it is opened
            pass

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place a failed worker is shown: a notification, a row of the Pipeline screen's Problems pane
        (``failed`` tells it), and the loading line of the screen that started it. Screens hand their workers'
        state changes here (``CapsearchScreen``): Textual tells only the node that started a worker."""
        if event.state != WorkerState.ERROR:
            return
        failure = WorkerFailure.of(event.worker)
        if failure not in self.failures:   # the same failure again (a store that stays broken): one row
            self.failures.append(failure)
        self.notify(failure.reason, title=f"{failure.what} failed", severity="error", timeout=15, markup=False)
        node = event.worker.node
        if isinstance(node, CapsearchScreen) and node.is_mounted:
            node.show_failure(failure)
        self.failed.publish(failure)

    def action_switch_screen_mode(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.BINDINGS))

    async def _search_screen(self) -> SearchScreen:
        await self.switch_mode("search")
        screen = self.screen
        assert isinstance(screen, registry.mode("search").load())
        return screen

    @on(OpenInSearch)
    async def _open_in_search(self, message: OpenInSearch) -> None:
        (await self._search_screen()).show_query(message.query, message.method, message.scope)

    @on(OpenLike)
    async def _open_like(self, message: OpenLike) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()       # a photo's detail over a list: back to the list first
        (await self._search_screen()).show_like(message.image_id)
