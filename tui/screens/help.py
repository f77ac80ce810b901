"""The help screen (``?``): every key of every screen, generated from the bindings themselves (the app's are
passed in: this module does not import the app; the screens come from ``tui.registry``)."""
from __future__ import annotations

from typing import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.registry import MODES, SCREENS


def _key_name(key: str) -> str:
    names = {"question_mark": "?", "escape": "esc", "enter": "enter", "slash": "/", "plus": "+", "minus": "-"}
    return ", ".join(names.get(k, k) for k in key.split(","))


def key_rows(bindings) -> list[tuple[str, str]]:
    rows = []
    for b in bindings:
        if isinstance(b, Binding):
            what = b.description or b.action
            rows.append((_key_name(b.key), f"{what}: {b.tooltip}" if b.tooltip else what))
        else:
            rows.append((_key_name(b[0]), b[2] if len(b) > 2 else b[1]))
    return rows


def help_sections(app_bindings: Iterable) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(title, what it is, [(key, what it does)]) for the app (``app_bindings``) and every screen."""
    keys = {e.key for e in MODES}
    everywhere = [(f"{MODES[0].key} … {MODES[-1].key}", "switch screen: " + ", ".join(e.title for e in MODES))]
    everywhere += [r for r in key_rows(app_bindings) if r[0] not in keys]
    everywhere += [("tab, shift+tab", "move between the parts of a screen"), ("ctrl+q", "quit from anywhere")]
    sections = [("Everywhere", f"Keys {MODES[0].key}-{MODES[-1].key} switch screens when the cursor is not in a "
                 "text box (esc leaves it).", everywhere)]
    for entry in SCREENS:
        cls = entry.load()
        title = f"{entry.key} {entry.title}" if entry.is_mode else f"  {entry.title}"
        sections.append((title, cls.HELP, key_rows(cls.BINDINGS)))
    return sections


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q,f1", "dismiss", "Close")]

    def __init__(self, app_bindings: Iterable) -> None:
        """``app_bindings``: the keys that work everywhere (the app's ``BINDINGS``)."""
        super().__init__()
        self.app_bindings = list(app_bindings)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(Text("capsearch keys (esc closes)", style="bold"), id="help-title")
            for title, about, rows in help_sections(self.app_bindings):
                table = Table(show_header=False, box=None, padding=(0, 1))
                table.add_column("key", style="bold cyan", min_width=16, max_width=16, no_wrap=True)
                table.add_column("what", ratio=1)
                for key, what in rows:
                    table.add_row(key, what)
                yield Static(Text(title, style="bold underline"), classes="help-heading")
                if about:
                    yield Static(Text(about, style="dim"), classes="help-about")
                yield Static(table, classes="help-keys")
