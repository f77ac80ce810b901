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
