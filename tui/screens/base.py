"""What every top-level screen shares: header, the screen bar, the footer with its keys."""
from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header

from tui.widgets.nav import NavBar


class CapsearchScreen(Screen):
    """A screen of the app; subclasses compose their body in ``compose_body``."""

    MODE: ClassVar[str] = ""
    HELP: ClassVar[str] = ""          # one paragraph for the help screen

    loaded_version = 0

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield NavBar(self.MODE, id="nav")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:  # pragma: no cover - every screen overrides it
        yield from ()

    @property
    def ws(self):
        return self.app.ws

    def on_mount(self) -> None:
        self.loaded_version = getattr(self.app, "data_version", 0)

    def on_screen_resume(self) -> None:
        """Coming back to a screen after a run changed the workspace: read it again."""
        version = getattr(self.app, "data_version", 0)
        if version != self.loaded_version:
            self.loaded_version = version
            self.reload()

    def reload(self) -> None:
        """Read this screen's data from the workspace again."""
