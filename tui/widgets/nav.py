"""The line under the header naming every screen with its key; the current one is highlighted."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

SCREENS: tuple[tuple[str, str, str], ...] = (
    ("1", "pipeline", "Pipeline"),
    ("2", "captions", "Captions"),
    ("3", "search", "Search"),
    ("4", "evaluation", "Evaluation"),
    ("5", "runs", "Runs"),
)


class NavBar(Static):
    """``1 Pipeline  2 Captions  3 Search  4 Evaluation  5 Runs``, with ``current`` highlighted."""

    def __init__(self, current: str, **kwargs) -> None:
        super().__init__(self._text(current), **kwargs)

    @staticmethod
    def _text(current: str) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        for key, mode, label in SCREENS:
            style = "bold reverse" if mode == current else ""
            text.append(f" {key} ", style="bold" if mode != current else "bold reverse")
            text.append(f"{label} ", style=style)
            text.append(" ")
        text.append(" ? help", style="dim")
        return text
