"""The line under the header naming every screen with its key; the current one is highlighted."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.registry import MODES


class NavBar(Static):
    """``1 Pipeline  2 Captions  3 Search  4 Evaluation  5 Runs``, with ``current`` highlighted."""

    def __init__(self, current: str, **kwargs) -> None:
        super().__init__(self._text(current), **kwargs)

    @staticmethod
    def _text(current: str) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        for entry in MODES:
            style = "bold reverse" if entry.name == current else ""
            text.append(f" {entry.key} ", style="bold" if entry.name != current else "bold reverse")
            text.append(f"{entry.title} ", style=style)
            text.append(" ")
        text.append(" ? help", style="dim")
        return text
