"""What every screen of the app shares: the frame (header, the screen bar, the footer with its keys), the app
it belongs to (typed), reloading after a run, and handing its workers' failures to the app.

Workers (``@work(thread=True, description=...)``) raise when they fail; Textual tells only the node that
started a worker about its state, so the screen passes a failed worker's state change on to the app, whose
one handler (``CapsearchApp.on_worker_state_changed``) shows the failure: a notification, a row in the
Pipeline screen's Problems pane, and here, in the line that said what the screen was loading
(``LOADING_LINES``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState

from tui.widgets.nav import NavBar

if TYPE_CHECKING:
    from pathlib import Path

    from textual.geometry import Size
    from textual.signal import Signal

    from pipeline.runs import RunInfo
    from pipeline.workspace import Workspace
    from tui.failures import WorkerFailure
    from tui.search_loader import SearchLoader


WIDE = 120     # columns from which a screen is wide (``-wide`` in capsearch.tcss): full labels, larger photos


class CapsearchHost(Protocol):
    """What a screen reads from the app and tells it (``tui.app.CapsearchApp`` is one; screens never import it)."""

    ws: Workspace
    data_version: int                        # bumped when a run changed the workspace: screens reload when shown
    search_loader: SearchLoader
    image_mode: str
    log_path: Path | None
    prefect_api_url: str | None
    timings: bool                            # per-search timings on screen (off for reproducible screenshots)
    run_going_on_at_exit: RunInfo | None     # set by the Pipeline screen when the app closes during a run
    failures: list[WorkerFailure]
    failed: Signal[WorkerFailure]

    @property
    def size(self) -> Size: ...

    def preload_search_index(self) -> None: ...


class CapsearchScreen(Screen):
    """A screen of the app; subclasses compose their body in ``compose_body``."""

    MODE: ClassVar[str] = ""          # the screen (mode) highlighted in the screen bar
    HELP: ClassVar[str] = ""          # one paragraph for the help screen
    LOADING_LINES: ClassVar[dict[str, str]] = {}   # worker group -> the Static saying what it loads (shows a failure)

    loaded_version = 0

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield NavBar(self.MODE, id="nav")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:  # pragma: no cover - every screen overrides it
        yield from ()

    @property
    def capsearch_app(self) -> CapsearchHost:
        """The app, with the attributes screens use typed (``self.app`` is any ``App``)."""
        return cast("CapsearchHost", self.app)

    @property
    def ws(self) -> Workspace:
        return self.capsearch_app.ws

    @property
    def narrow(self) -> bool:
        """Under ``WIDE`` columns: tables abbreviate (with a legend) so that what matters fits."""
        return self.app.size.width < WIDE

    def on_mount(self) -> None:
        self.loaded_version = self.capsearch_app.data_version

    def on_screen_resume(self) -> None:
        """Coming back to a screen after a run changed the workspace: read it again."""
        version = self.capsearch_app.data_version
        if version != self.loaded_version:
            self.loaded_version = version
            self.reload()

    def reload(self) -> None:
        """Read this screen's data from the workspace again."""

    @on(Worker.StateChanged)
    def _hand_failure_to_app(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.post_message(event)

    def show_failure(self, failure: WorkerFailure) -> None:
        """Say in the screen's loading line (if the failed worker has one) what could not be done, and why."""
        selector = self.LOADING_LINES.get(failure.group)
        if selector is not None:
            self.query_one(selector, Static).update(Text(failure.line(), style="red"))
