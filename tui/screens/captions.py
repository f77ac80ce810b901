"""Captions: a filterable list of the target photos, and a photo's detail (neighbours, prompt, captions)."""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from pipeline.browse import Browser, PhotoDetail, PhotoSummary, filter_photos
from pipeline.caption_metrics.results import HUMAN, order_label
from pipeline.caption_metrics.views import CaptionMetricsView, caption_metrics_view
from tui.messages import CaptionMetricsLoaded, OpenLike, PhotoLoaded, PhotosLoaded
from tui.screens.base import CapsearchScreen
from tui.widgets.caption_metrics import fmt, photo_scores_text
from tui.widgets.captions import CaptionColumns, NeighbourRow
from tui.widgets.nav import NavBar
from tui.widgets.photo import Photo
from tui.widgets.tables import fill_table

FILTER_DELAY = 0.15
PHOTO_COLUMNS = [("photo", "photo"), ("caption", "caption")]
MAX_ROWS = 500            # rows drawn in the list; next/previous still step through every match


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

    def __init__(self) -> None:
        super().__init__()
        self.photos: list[PhotoSummary] = []
        self.shown: list[PhotoSummary] = []
        self._filter_timer = None
        self.scores = CaptionMetricsView(None)
        self.order_metric = ""          # "": photo order; else a per-photo caption metric, worst first
        self.score_row = ""

    def compose_body(self) -> ComposeResult:
        with Vertical(id="captions-body"):
            yield Input(placeholder="filter photos: words in the id or captions (/ to focus, esc to leave)",
                        id="photo-filter")
            yield Static("loading photos…", id="photos-count")
            yield DataTable(id="photos", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#photos", DataTable).focus()
        self._load()

    @work(thread=True, group="photos", exclusive=True, exit_on_error=False)
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
        self.order_metric = choices[(choices.index(self.order_metric) + 1) % len(choices)]
        self._apply_filter()

    def action_next_row(self) -> None:
        rows = self.scores.score_rows()
        if not rows:
            self.notify("no caption metrics yet: run the caption-metrics stage", severity="warning")
            return
        self.score_row = rows[(rows.index(self.score_row) + 1) % len(rows)] if self.score_row in rows else rows[0]
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

    @on(Input.Changed, "#photo-filter")
    def _filter_changed(self) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._filter_timer = self.set_timer(FILTER_DELAY, self._apply_filter)

    @on(Input.Submitted, "#photo-filter")
    def _filter_submitted(self) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._apply_filter()
        self.query_one("#photos", DataTable).focus()

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


class PhotoScreen(Screen):
    """One photo: the photo, its reference captions, every captioner's caption, its neighbours and the prompt."""

    HELP = ("n / p (or → / ←) step through the photos of the list; l shows the photos most like this one; esc goes "
            "back to the list. Neighbours that are duplicates of the photo are struck out: their captions are left "
            "out of its prompt and of the kNN consensus.")
    BINDINGS = [
        Binding("n,right", "step(1)", "Next", tooltip="the next photo of the list"),
        Binding("l", "like", "More like this", tooltip="the photos most like this one (Search screen)"),
        Binding("p,left", "step(-1)", "Previous", tooltip="the previous photo of the list"),
        Binding("escape", "app.pop_screen", "Back", tooltip="back to the list"),
        Binding("j,down", "scroll(1)", "Scroll down", show=False, tooltip="scroll the detail down"),
        Binding("k,up", "scroll(-1)", "Scroll up", show=False, tooltip="scroll the detail up"),
    ]

    def __init__(self, ids: list[str], index: int, scores: CaptionMetricsView | None = None) -> None:
        super().__init__()
        self.ids = ids
        self.index = index
        self.detail: PhotoDetail | None = None
        self.scores = scores or CaptionMetricsView(None)

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield NavBar("captions", id="nav")
        with VerticalScroll(id="photo-body"):
            with Horizontal(id="photo-top"):
                yield Photo(id="photo")
                with Vertical(id="photo-info"):
                    yield Static("", id="photo-title")
                    yield Static("", id="reference-captions")
            yield Static(Text("Captions", style="bold"), classes="section")
            yield CaptionColumns(id="caption-columns")
            yield Static(Text("Neighbours", style="bold"), id="neighbours-title", classes="section")
            yield Vertical(id="neighbours")
            yield Static(Text("Prompt given to the VLM", style="bold"), id="prompt-title", classes="section")
            yield Static("", id="prompt", markup=False)
        yield Footer()

    @property
    def ws(self):
        return self.app.ws

    def on_mount(self) -> None:
        self._load(self.ids[self.index])

    @work(thread=True, group="photo", exclusive=True, exit_on_error=False)
    def _load(self, image_id: str) -> None:
        self.post_message(PhotoLoaded(Browser(self.ws).photo_detail(image_id)))

    def action_step(self, step: int) -> None:
        if not self.ids:
            return
        self.index = (self.index + step) % len(self.ids)
        self._load(self.ids[self.index])

    def action_like(self) -> None:
        if self.ids:
            self.post_message(OpenLike(self.ids[self.index]))

    def action_scroll(self, lines: int) -> None:
        self.query_one("#photo-body", VerticalScroll).scroll_relative(y=lines * 3, animate=False)

    @on(PhotoLoaded)
    async def _loaded(self, message: PhotoLoaded) -> None:
        if message.detail.id != self.ids[self.index]:
            return
        if self.detail is not None and self.detail.id != message.detail.id:
            self.query_one("#photo-body", VerticalScroll).scroll_home(animate=False)
        d = self.detail = message.detail
        await self.query_one("#photo", Photo).show(d.path)
        title = Text()
        title.append(d.id, style="bold")
        title.append(f"  {self.index + 1}/{len(self.ids)} · {d.split or 'no split'} · {d.width}×{d.height}", style="dim")
        self.query_one("#photo-title", Static).update(title)
        refs = Text()
        refs.append("Reference captions (human, never shown to the VLM)\n", style="italic dim")
        for n, cap in enumerate(d.reference_captions, 1):
            refs.append(f"{n}. {cap}\n")
        if not d.reference_captions:
            refs.append("none", style="dim")
        photo_scores = self.scores.photo_scores(d.id)
        if photo_scores.get(HUMAN):
            refs.append("caption 1 scored against the others: ", style="italic dim")
            refs.append_text(photo_scores_text(photo_scores[HUMAN]))
        self.query_one("#reference-captions", Static).update(refs)
        self.query_one(CaptionColumns).show(d.captions, photo_scores)
        title = Text("Neighbours", style="bold")
        dups = sum(1 for n in d.neighbours if n.duplicate)
        title.append(f"  {len(d.neighbours) - dups} most similar reference photos · similarity"
                     + (f" · {dups} duplicate{'s' if dups > 1 else ''} of this photo struck out" if dups else "")
                     + (" · from an earlier configuration" if d.neighbours_stale else ""), style="dim")
        self.query_one("#neighbours-title", Static).update(title)
        box = self.query_one("#neighbours", Vertical)
        await box.remove_children()
        if d.neighbours:
            await box.mount_all([NeighbourRow(n, rank) for rank, n in enumerate(d.neighbours, 1)])
        else:
            await box.mount(Static(Text("no neighbours yet: run the neighbours stage", style="dim")))
        ptitle = Text("Prompt given to the VLM", style="bold")
        if d.prompt_stale:
            ptitle.append("  from an earlier configuration", style="dim")
        if d.prompt_warning:
            ptitle.append(f"  {d.prompt_warning}", style="yellow")
        self.query_one("#prompt-title", Static).update(ptitle)
        self.query_one("#prompt", Static).update(
            Text(d.prompt) if d.prompt is not None else Text("no prompt yet: run the prompts stage", style="dim"))
