"""The app's screens, listed once: the five modes with their keys (1-5) and the detail screens opened from them.

The app builds its modes and key bindings from this list, the screen bar (``widgets/nav``) draws it, and the help
screen reads each screen's ``HELP`` and ``BINDINGS`` through it. A screen's module is imported when the screen is
first needed (``ScreenEntry.load``), so opening the app imports only the screen it opens on, and no screen module
imports the app or this list's other screens.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.screen import Screen


@dataclass(frozen=True)
class ScreenEntry:
    """One screen: its name (a mode's name for the five modes), title, class (``module:Class``), and the key that
    switches to it (modes only: a detail screen is opened from a mode's list)."""

    name: str
    title: str
    cls: str
    key: str = ""

    @property
    def is_mode(self) -> bool:
        return bool(self.key)

    def load(self) -> type[Screen]:
        """The screen's class (its module is imported on first use)."""
        module, _, name = self.cls.partition(":")
        return getattr(import_module(module), name)


# In the help screen's order: each detail screen after the mode it is opened from.
SCREENS: tuple[ScreenEntry, ...] = (
    ScreenEntry("pipeline", "Pipeline", "tui.screens.pipeline:PipelineScreen", key="1"),
    ScreenEntry("captions", "Captions", "tui.screens.captions:CaptionsScreen", key="2"),
    ScreenEntry("photo", "Photo", "tui.screens.photo:PhotoScreen"),
    ScreenEntry("search", "Search", "tui.screens.search:SearchScreen", key="3"),
    ScreenEntry("evaluation", "Evaluation", "tui.screens.evaluation:EvaluationScreen", key="4"),
    ScreenEntry("missed", "Missed queries", "tui.screens.missed:MissedScreen"),
    ScreenEntry("runs", "Runs", "tui.screens.runs:RunsScreen", key="5"),
)
MODES: tuple[ScreenEntry, ...] = tuple(e for e in SCREENS if e.is_mode)
DEFAULT_MODE = MODES[0].name


def mode(name: str) -> ScreenEntry:
    return next(e for e in MODES if e.name == name)
