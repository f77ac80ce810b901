"""Search: ranked photos as you type (debounced), a key to cycle the ranking method, a key for the scope
(every photo, or the experiment's targets), photos like a photo (``like:PHOTO``, or l on a result), and
where the true photo of an evaluation query ranked. The index (text model included) is loaded by the app
in the background once it has shown the workspace's stages (``tui.search_loader``)."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Input, Static
from textual.worker import get_current_worker

from pipeline.browse import Browser
from tui.cycle import cycle
from tui.screens.base import CapsearchScreen
from tui.screens.photo import PhotoScreen
from tui.widgets.debounced_input import DebouncedInput
from tui.widgets.photo import Photo
from tui.widgets.tables import fill_table

if TYPE_CHECKING:
    from pipeline.search_service import Hit

HIT_COLUMNS = [("rank", "#"), ("score", "score"), ("photo", "photo"), ("matched", "matched"), ("caption", "caption")]
SEARCH_DELAY = 0.05       # seconds of quiet typing before a search starts
TOP_K = 50
LIKE = "like:"            # a query "like:PHOTO" lists the photos most like PHOTO (an id or an image file)
SCOPE_WORDS = {"collection": "every photo", "targets": "targets only"}


def photo_width(screen_width: int) -> int:
    """Characters for a photo name in the results (names longer than this are cut in the middle)."""
    return max(16, min(48, screen_width // 3))


def format_rank(rank: float) -> str:
    return f"{rank:.0f}" if float(rank).is_integer() else f"{rank:.1f}"


def abbreviations(kinds: list[str]) -> dict[str, str]:
    """A short code for each kind of caption that matched, for narrow screens (a legend names them): the initials
    of its words, ``H`` for human, ``KC`` for knn-consensus, ``I+H`` for image + human, ``H'`` for a caption of the
    photo's identical twin (``human (of IMG_0001.webp)``); a number added where two kinds would share one."""
    codes: dict[str, str] = {}
    for kind in kinds:
        base, twin, _ = kind.partition(" (")
        parts = [re.sub(r"[^A-Za-z0-9]+", " ", part).split() for part in base.split("+")]
        code = "+".join("".join(w[0] for w in words).upper() for words in parts) or "?"
        code += "'" if twin else ""
        taken = set(codes.values())
        unique, n = code, 2
        while unique in taken:
            unique, n = f"{code}{n}", n + 1
        codes[kind] = unique
    return codes


class SearchReady(Message):
    """The search index is loaded: its methods, how many photos, the evaluation queries (query, kind, photo)."""

    def __init__(self, methods: list[str], n_photos: int,
                 examples: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__()
        self.methods = methods
        self.n_photos = n_photos
        self.examples = examples or []


@dataclass(frozen=True)
class TruePhoto:
    """Where the true photo of an evaluation query ranked."""

    image_id: str
    kind: str
    rank: float


class SearchResults(Message):
    def __init__(self, query: str, method: str, hits: list[Hit], seconds: float,
                 truth: list[TruePhoto] | None = None) -> None:
        super().__init__()
        self.query = query
        self.method = method
        self.hits = hits
        self.seconds = seconds
        self.truth = truth or []


class SearchScreen(CapsearchScreen):
    MODE = "search"
    HELP = ("Type a query: the photos are ranked as you type, each with the caption that matched and its kind "
            "(human, or the captioner that wrote it). ctrl+o switches between every photo of the collection and the "
            "experiment's targets; ctrl+t cycles the ranking method (all captions, each captioner's, clip, hybrid); "
            "l on a result (or in the photo lists) shows the photos most like it, as does typing like:PHOTO. For an "
            "evaluation query the true photo is marked ★ and its rank is shown. ctrl+n fills in the next evaluation "
            "query.")
    BINDINGS = [
        Binding("ctrl+t", "next_method", "Method", priority=True,
                tooltip="rank with the next method: all captions, each captioner, clip, hybrid, oracle (m in the results)"),
        Binding("ctrl+o", "toggle_scope", "Scope", priority=True,
                tooltip="search every photo of the collection, or only the experiment's targets"),
        Binding("l", "like", "More like this", show=False, tooltip="in the results: the photos most like this one"),
        Binding("ctrl+n", "next_example", "Eval query", priority=True,
                tooltip="fill in the next evaluation query (its true photo is marked ★)"),
        Binding("slash", "focus_query", "Query", show=False, tooltip="type in the query box"),
        Binding("escape", "focus_results", "Results", show=False, tooltip="move from the query box to the results"),
        Binding("m", "next_method", "Method", show=False, tooltip="next method (from the results)"),
        Binding("enter", "open", "Open photo", show=False,
                tooltip="in the results: open the photo with its neighbours, prompt and captions"),
    ]
    LOADING_LINES = {"index": "#search-status", "search": "#search-status"}

    method: reactive[str] = reactive("", init=False)    # the ranking method; its label is drawn by watch_method

    def __init__(self) -> None:
        super().__init__()
        self.methods: list[str] = []
        self.scope: str = ""
        self.examples: list[tuple[str, str, str]] = []
        self.example_index = -1
        self.ready = False
        self.index = None
        self.browser: Browser | None = None
        self.last: SearchResults | None = None
        self._pending: tuple[str, str] | None = None
        self._paths: dict[str, object] = {}

    def compose_body(self) -> ComposeResult:
        with Vertical(id="search-body"):
            with Horizontal(id="query-row"):
                yield DebouncedInput(placeholder="type a query, e.g. a dog running on the beach", id="query",
                                     delay=SEARCH_DELAY)
                yield Static("", id="method")
            yield Static("loading the search index…", id="search-status")
            with Horizontal(id="results-row"):
                yield DataTable(id="hits", cursor_type="row", zebra_stripes=True)
                with Vertical(id="preview"):
                    yield Photo(id="preview-photo", mode=self.capsearch_app.image_mode)
                    yield Static("", id="preview-text")
            yield Static("", id="hits-legend")

    def on_mount(self) -> None:
        self.scope = self.scope or self.ws.config.search.scope
        self.query_one("#query", Input).focus()
        self.watch_method(self.method)
        self._load_index(self.scope)

    def reload(self) -> None:
        self.ready = False
        self.query_one("#search-status", Static).update(Text("the workspace changed: loading the search index…",
                                                             style="dim"))
        self._load_index(self.scope)

    # -- index -------------------------------------------------------------------------------------
    @work(thread=True, group="index", exclusive=True, exit_on_error=False, description="loading the search index")
    def _load_index(self, scope: str) -> None:
        app = self.capsearch_app     # the app started loading the index when it opened: usually ready by now
        index = app.search_loader.get(scope, app.data_version)
        methods = list(index.methods())
        browser = Browser(self.ws)
        examples = browser.evaluation_queries(limit=200)
        if get_current_worker().is_cancelled or scope != self.scope:
            return
        self.index, self.browser = index, browser
        self.post_message(SearchReady(methods, len(index.photo_ids), examples=examples))

    @on(SearchReady)
    def _ready(self, message: SearchReady) -> None:
        status = self.query_one("#search-status", Static)
        self.ready = True
        self.methods = message.methods
        self.examples = message.examples
        if not message.methods:
            self.method = ""
            status.update(Text("nothing to search by text yet: run the pipeline first (screen 1, key a); "
                               "like:PHOTO finds photos by image", style="yellow"))
            if self._pending is not None or self.query_one("#query", Input).value.startswith(LIKE):
                self._start_pending()
            return
        default = self.ws.config.search.default_method
        if self.method not in self.methods:
            self.method = default if default in self.methods else self.methods[0]
        status.update(Text(f"{message.n_photos} photos ({SCOPE_WORDS.get(self.scope, self.scope)}, ^o) · "
                           f"{len(self.methods)} methods · {len(self.examples)} evaluation queries (ctrl+n)",
                           style="dim"))
        self._start_pending()

    def _start_pending(self) -> None:
        if self._pending is not None:
            query, method = self._pending
            self._pending = None
            self.show_query(query, method)
        elif self.query_one("#query", Input).value.strip():
            self._start_search()

    # -- typing ------------------------------------------------------------------------------------
    @on(DebouncedInput.Settled, "#query")
    def _settled(self, event: DebouncedInput.Settled) -> None:
        self._start_search()
        if event.submitted:             # enter: on to the results
            self.action_focus_results()

    def _start_search(self) -> None:
        query = self.query_one("#query", Input).value
        if not self.ready:
            return
        if not query.strip():
            self.query_one("#hits", DataTable).clear(columns=True)
            return
        if not query.startswith(LIKE) and not self.method:
            return
        self._search(query, self.method)

    @work(thread=True, group="search", exclusive=True, exit_on_error=False, description="searching")
    def _search(self, query: str, method: str) -> None:
        worker = get_current_worker()
        t0 = time.perf_counter()
        truth: list[TruePhoto] = []
        if query.startswith(LIKE):
            result = self.index.like(query[len(LIKE):].strip(), TOP_K)
            hits = result.hits
        else:
            hits = self.index.search(query, method, TOP_K)
            found = self.index.evaluation_query(query)
            if found and found[0] in self.index.position:
                truth = [TruePhoto(found[0], found[1], float(self.index.rank_of(query, method, found[0])))]
        paths = {h.image_id: self.browser.photo_path(h.image_id) for h in hits}
        if not worker.is_cancelled:
            self._paths.update(paths)
            self.post_message(SearchResults(query, method, hits, time.perf_counter() - t0, truth))

    @on(SearchResults)
    def _results(self, message: SearchResults) -> None:
        if message.query != self.query_one("#query", Input).value or message.method != self.method:
            return  # typed on since: a newer search is coming
        self.last = message
        self._show(message)
        if message.hits:
            self.query_one("#hits", DataTable).move_cursor(row=0)
            self._preview(0)

    def on_resize(self) -> None:
        if self.last is not None:
            self._show(self.last)      # narrow and wide screens label the matched kinds differently

    def _show(self, message: SearchResults) -> None:
        """The results table, the line above it (where the true photo ranked comes first: it is what the query
        was for) and, on a narrow screen, the legend of the matched kinds' codes."""
        from pipeline.display import shorten_middle

        true_ids = {t.image_id for t in message.truth}
        kinds = list(dict.fromkeys(hit.matched_label for hit in message.hits))
        codes = abbreviations(kinds) if self.narrow else {k: k for k in kinds}
        rows = []
        width = photo_width(self.capsearch_app.size.width)
        for hit in message.hits:
            mark = "★" if hit.image_id in true_ids else ""
            rows.append((Text(f"{hit.rank}{mark}", style="bold yellow" if mark else ""), f"{hit.score:.3f}",
                         shorten_middle(hit.image_id, width), Text(codes[hit.matched_label], style="cyan"),
                         hit.caption))
        table = self.query_one("#hits", DataTable)
        row = table.cursor_row
        fill_table(table, HIT_COLUMNS, rows, keep_cursor=False)
        if rows and row > 0:
            table.move_cursor(row=min(row, len(rows) - 1))
        legend = Text("matched: ", style="dim")
        for n, (kind, code) in enumerate(codes.items()):
            legend.append(("" if n == 0 else " · ") + code, style="cyan")
            legend.append(f" {kind}", style="dim")
        abbreviated = any(code != kind for kind, code in codes.items())
        self.query_one("#hits-legend", Static).update(legend if abbreviated else "")
        self.query_one("#hits-legend", Static).display = abbreviated
        self.query_one("#search-status", Static).update(self._status_line(message))

    def _status_line(self, message: SearchResults) -> Text:
        """Where the true photo ranked first (what an evaluation query is for), then how many results, the method
        (left out where the line would not fit: its box shows it), the scope and the time."""
        scope = SCOPE_WORDS.get(self.scope, self.scope)
        if message.query.startswith(LIKE):
            parts = [f"{len(message.hits)} photos like {message.query[len(LIKE):].strip()}", scope]
        else:
            parts = [f"{len(message.hits)} results", message.method, scope]
        if self.capsearch_app.timings:
            parts.append(f"{message.seconds * 1000:.0f} ms")
        room = self.app.size.width - 2
        for drop_method in (False, True):
            line = Text()
            for t in message.truth:
                line.append("★ true photo ranked ", style="")
                line.append(f"#{format_rank(t.rank)}", style="bold yellow")
                line.append(f" ({t.kind} query) · ", style="dim")
            shown = [p for p in parts if not (drop_method and p == message.method)]
            line.append(" · ".join(shown), style="dim")
            if line.cell_len <= room:
                break
        return line

    @on(DataTable.RowHighlighted, "#hits")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._preview(event.cursor_row)

    def _preview(self, row: int) -> None:
        if self.last is None or not (0 <= row < len(self.last.hits)):
            return
        hit = self.last.hits[row]
        self.run_worker(self.query_one("#preview-photo", Photo).show(self._paths.get(hit.image_id)),
                        group="preview", exclusive=True)
        text = Text()
        text.append(f"#{hit.rank} ", style="bold")
        text.append(f"{hit.image_id}\n", style="dim")
        text.append(hit.caption or "")
        if hit.matched:
            text.append(f"\n({hit.matched_label})", style="cyan")
        self.query_one("#preview-text", Static).update(text)

    # -- keys --------------------------------------------------------------------------------------
    def watch_method(self, method: str) -> None:
        label = Text()
        label.append(" method ", style="dim")
        label.append(method or "-", style="bold")
        label.append(" ^t ", style="dim")
        self.query_one("#method", Static).update(label)

    def action_toggle_scope(self) -> None:
        self.scope = "targets" if self.scope == "collection" else "collection"
        self.ready = False
        self.query_one("#search-status", Static).update(
            Text(f"loading the search index ({SCOPE_WORDS[self.scope]})…", style="dim"))
        self._load_index(self.scope)

    def action_like(self) -> None:
        table = self.query_one("#hits", DataTable)
        if self.last is not None and self.last.hits and table.has_focus and table.cursor_row >= 0:
            self.show_like(self.last.hits[min(table.cursor_row, len(self.last.hits) - 1)].image_id)

    def show_like(self, image_id: str) -> None:
        """List the photos most like ``image_id`` (the query box shows ``like:<id>``)."""
        box = self.query_one("#query", DebouncedInput)
        if box.value != LIKE + image_id:
            box.value = LIKE + image_id
        box.settle_now()
        self.query_one("#hits", DataTable).focus()

    def action_next_method(self) -> None:
        if not self.methods:
            return
        self.method = cycle(self.methods, self.method)
        self._start_search()

    def action_next_example(self) -> None:
        if not self.examples:
            self.notify("no evaluation queries in this workspace yet")
            return
        self.example_index = cycle(range(len(self.examples)), self.example_index)
        query, _, _ = self.examples[self.example_index]
        self.query_one("#query", Input).value = query

    def action_focus_query(self) -> None:
        self.query_one("#query", Input).focus()

    def action_focus_results(self) -> None:
        self.query_one("#hits", DataTable).focus()

    def action_open(self) -> None:
        table = self.query_one("#hits", DataTable)
        if self.last is not None and self.last.hits and table.has_focus:
            self.app.push_screen(PhotoScreen([h.image_id for h in self.last.hits], max(0, table.cursor_row)))

    @on(DataTable.RowSelected, "#hits")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if self.last is not None and self.last.hits:
            self.app.push_screen(PhotoScreen([h.image_id for h in self.last.hits], event.cursor_row))

    def show_query(self, query: str, method: str, scope: str | None = None) -> None:
        """Put ``query`` in the box and rank with ``method`` in ``scope`` (default: the current one; the Evaluation
        drill-down asks for the targets)."""
        if scope and scope != self.scope and self.is_mounted:
            self.scope = scope
            self.ready = False
            self._pending = (query, method)
            self.query_one("#query", Input).value = query
            self.query_one("#search-status", Static).update(
                Text(f"loading the search index ({SCOPE_WORDS[scope]})…", style="dim"))
            self._load_index(scope)
            return
        if scope:
            self.scope = scope
        if not self.ready:
            self._pending = (query, method)
            self.query_one("#query", Input).value = query
            return
        if method in self.methods:
            self.method = method
        box = self.query_one("#query", DebouncedInput)
        if box.value != query:
            box.value = query
        box.settle_now()
