"""Missed queries: the evaluation queries whose true photo a method ranked below K, worst first; enter opens
one in the Search screen (in the targets, where the evaluation measured its rank)."""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from pipeline.browse import Browser, MissedQuery
from tui.messages import OpenInSearch
from tui.screens.base import CapsearchScreen
from tui.screens.search import format_rank
from tui.widgets.tables import fill_table


class MissedLoaded(Message):
    def __init__(self, method: str, kind: str, k: int, missed: list[MissedQuery]) -> None:
        super().__init__()
        self.method = method
        self.kind = kind
        self.k = k
        self.missed = missed


class MissedScreen(CapsearchScreen):
    """The evaluation queries whose true photo a method did not rank in its top K; enter opens one in Search."""

    MODE = "evaluation"
    HELP = "Queries whose true photo the method ranked below K, worst first; enter opens the query in Search."
    BINDINGS = [
        Binding("enter", "open", "Open in Search", tooltip="show the highlighted query in the Search screen"),
        Binding("escape", "app.pop_screen", "Back", tooltip="back to the metrics"),
    ]
    LOADING_LINES = {"missed": "#missed-title"}

    def __init__(self, method: str, kind: str, k: int) -> None:
        super().__init__()
        self.method, self.kind, self.k = method, kind, k
        self.missed: list[MissedQuery] = []

    def compose_body(self) -> ComposeResult:
        with Vertical(id="missed-body"):
            yield Static(f"loading the queries {self.method} missed…", id="missed-title")
            yield DataTable(id="missed", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#missed", DataTable).focus()
        self._load()

    def reload(self) -> None:
        self._load()

    @work(thread=True, group="missed", exclusive=True, exit_on_error=False,
          description="reading the queries the method missed")
    def _load(self) -> None:
        missed = Browser(self.ws).missed_queries(self.method, self.kind, self.k)
        self.post_message(MissedLoaded(self.method, self.kind, self.k, missed))

    @on(MissedLoaded)
    def _loaded(self, message: MissedLoaded) -> None:
        self.missed = message.missed
        title = Text()
        title.append(f"{len(self.missed)} {self.kind} queries ", style="bold")
        title.append(f"whose true photo {self.method} ranked below {self.k} · enter opens one in Search",
                     style="dim")
        self.query_one("#missed-title", Static).update(title)
        fill_table(self.query_one("#missed", DataTable),
                   [(key, key) for key in ("rank", "true photo", "query", "top result")],
                   [(format_rank(m.rank), m.image_id, m.query, m.top_ids[0] if m.top_ids else "-") for m in self.missed])

    def action_open(self) -> None:
        row = self.query_one("#missed", DataTable).cursor_row
        if 0 <= row < len(self.missed):
            self.post_message(OpenInSearch(self.missed[row].query, self.method, "targets"))

    @on(DataTable.RowSelected, "#missed")
    def _selected(self) -> None:
        self.action_open()
