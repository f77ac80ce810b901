"""Captions: a filterable list of the target photos, ordered by a caption metric if asked; enter opens a photo's
detail (``tui.screens.photo``)."""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from pipeline.browse import Browser, PhotoSummary, filter_photos
from pipeline.caption_metrics.results import HUMAN, order_label
from pipeline.caption_metrics.views import CaptionMetricsView, caption_metrics_view
from tui.cycle import cycle
from tui.messages import CaptionMetricsLoaded, OpenLike
from tui.screens.base import CapsearchScreen
from tui.screens.photo import PhotoScreen
from tui.widgets.caption_metrics import fmt
from tui.widgets.debounced_input import DebouncedInput
from tui.widgets.tables import fill_table

FILTER_DELAY = 0.15
PHOTO_COLUMNS = [("photo", "photo"), ("caption", "caption")]
MAX_ROWS = 500            # rows drawn in the list; next/previous still step through every match


class PhotosLoaded(Message):
    def __init__(self, photos: list[PhotoSummary]) -> None:
        super().__init__()
        self.photos = photos


class CaptionsScreen(CapsearchScreen):
    MODE = "captions"
    HELP = ("The target photos. Type in the filter to keep photos whose id or captions contain every word; "
            "enter opens a photo with its neighbours, the exact prompt and every captioner's caption and scores. "
            "o orders the photos by a caption metric, worst first (o again: the next metric, then back to photo "
            "order); r picks whose captions are scored (a captioner or the human baseline); l shows the photos most "
            "like the highlighted one (in the Search screen).")
    BINDINGS = [
        Binding("enter", "open", "Open photo", tooltip="open the highlighted photo: neighbours, prompt, captions"),
        Binding("slash", "focus_filter", "Filter", tooltip="type words to keep matching photos"),
        Binding("escape", "leave_filter", "List", show=False, tooltip="leave the filter box for the list"),
        Binding("o", "next_order", "Order by", tooltip="order photos by a caption metric, worst first"),
        Binding("r", "next_row", "Scored captioner", tooltip="whose captions the order and score column use"),
        Binding("u", "refresh", "Refresh", show=False, tooltip="read the photos from the store again"),
        Binding("l", "like", "More like this", tooltip="the photos most like the highlighted one (Search screen)"),
    ]
    LOADING_LINES = {"photos": "#photos-count"}

    def __init__(self) -> None:
        super().__init__()
        self.photos: list[PhotoSummary] = []
        self.shown: list[PhotoSummary] = []
        self.scores = CaptionMetricsView(None)
        self.order_metric = ""          # "": photo order; else a per-photo caption metric, worst first
        self.score_row = ""

    def compose_body(self) -> ComposeResult:
        with Vertical(id="captions-body"):
            yield DebouncedInput(placeholder="filter photos: words in the id or captions (/ to focus, esc to leave)",
                                 id="photo-filter", delay=FILTER_DELAY)
            yield Static("loading photos…", id="photos-count")
            yield DataTable(id="photos", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#photos", DataTable).focus()
        self._load()

    @work(thread=True, group="photos", exclusive=True, exit_on_error=False,
          description="reading the target photos and their caption metrics")
    def _load(self) -> None:
        self.post_message(PhotosLoaded(Browser(self.ws).target_photos()))
        self.post_message(CaptionMetricsLoaded(caption_metrics_view(self.ws)))

    @on(CaptionMetricsLoaded)
    def _scores_loaded(self, message: CaptionMetricsLoaded) -> None:
        self.scores = message.view
        rows = self.scores.score_rows()
        if self.score_row not in rows:
            self.score_row = next((r for r in rows if r != HUMAN), rows[0] if rows else "")
        if self.order_metric and self.order_metric not in self.scores.sortable():
            self.order_metric = ""
        if self.photos:
            self._apply_filter()

    def action_next_order(self) -> None:
        choices = ["", *self.scores.sortable()]
        if len(choices) == 1:
            self.notify("no caption metrics yet: run the caption-metrics stage", severity="warning")
            return
        self.order_metric = cycle(choices, self.order_metric)
        self._apply_filter()

    def action_next_row(self) -> None:
        rows = self.scores.score_rows()
        if not rows:
            self.notify("no caption metrics yet: run the caption-metrics stage", severity="warning")
            return
        self.score_row = cycle(rows, self.score_row)
        self._apply_filter()

    @on(PhotosLoaded)
    def _loaded(self, message: PhotosLoaded) -> None:
        self.photos = message.photos
        self._apply_filter()

    def _apply_filter(self) -> None:
        text = self.query_one("#photo-filter", Input).value
        self.shown = filter_photos(self.photos, text)
        metric, row = self.order_metric, self.score_row
        if metric:
            by_id = {p.id: p for p in self.shown}
            self.shown = [by_id[i] for i in self.scores.order(row, metric, list(by_id))]
            scored = self.scores.rows.get(row)
            caption = dict(zip(scored.ids, scored.captions)) if scored else {}
            columns = [("photo", "photo"), ("score", f"{metric} ({row})"), ("caption", f"caption ({row})")]
            cells = [(p.id, fmt(metric, self.scores.score(row, metric, p.id)), caption.get(p.id, ""))
                     for p in self.shown[:MAX_ROWS]]
        else:
            columns = PHOTO_COLUMNS
            cells = [(p.id, p.caption) for p in self.shown[:MAX_ROWS]]
        fill_table(self.query_one("#photos", DataTable), columns, cells, keep_cursor=False)
        count = f"{len(self.shown)} of {len(self.photos)} target photos"
        if metric:
            count += f" · by {metric} of {row}, {order_label(metric)} (o: next metric, r: next captioner)"
        if not self.photos:
            count = "no target photos yet: run the pipeline (screen 1, key a)"
        count += f" matching '{text}'" if text.strip() else ""
        if len(self.shown) > MAX_ROWS:
            count += f" · the first {MAX_ROWS} are listed: type to narrow"
        self.query_one("#photos-count", Static).update(Text(count, style="dim"))

    @on(DebouncedInput.Settled, "#photo-filter")
    def _filter_settled(self, event: DebouncedInput.Settled) -> None:
        self._apply_filter()
        if event.submitted:             # enter: on to the list
            self.action_leave_filter()

    def action_focus_filter(self) -> None:
        self.query_one("#photo-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one("#photos", DataTable).focus()

    def action_refresh(self) -> None:
        self._load()

    def reload(self) -> None:
        self._load()

    def action_open(self) -> None:
        table = self.query_one("#photos", DataTable)
        if self.shown and table.cursor_row >= 0:
            self.open_photo(table.cursor_row)

    def action_like(self) -> None:
        table = self.query_one("#photos", DataTable)
        if self.shown and table.has_focus and 0 <= table.cursor_row < len(self.shown):
            self.post_message(OpenLike(self.shown[table.cursor_row].id))

    @on(DataTable.RowSelected, "#photos")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.open_photo(event.cursor_row)

    def open_photo(self, index: int) -> None:
        self.app.push_screen(PhotoScreen([p.id for p in self.shown], index, self.scores))
