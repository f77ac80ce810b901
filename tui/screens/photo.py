"""One photo: the photo, its reference captions, every captioner's caption with its scores, its neighbours and
the exact prompt; opened from the Captions list or the Search results, stepping through that list."""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from pipeline.browse import Browser, PhotoDetail
from pipeline.caption_metrics.results import HUMAN
from pipeline.caption_metrics.views import CaptionMetricsView
from tui.cycle import cycle
from tui.messages import OpenLike
from tui.screens.base import CapsearchScreen
from tui.widgets.caption_metrics import photo_scores_text
from tui.widgets.captions import CaptionColumns, NeighbourRow
from tui.widgets.photo import Photo


class PhotoLoaded(Message):
    def __init__(self, detail: PhotoDetail) -> None:
        super().__init__()
        self.detail = detail


class PhotoScreen(CapsearchScreen):
    """One photo of a list (``ids``, starting at ``index``); n / p step through the list."""

    MODE = "captions"
    HELP = ("n / p (or → / ←) step through the photos of the list; l shows the photos most like this one; esc goes "
            "back to the list. Neighbours that are duplicates of the photo are struck out: their captions are left "
            "out of its prompt and of the kNN consensus.")
    LOADING_LINES = {"photo": "#photo-title"}
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

    def compose_body(self) -> ComposeResult:
        mode = self.capsearch_app.image_mode
        with VerticalScroll(id="photo-body"):
            with Horizontal(id="photo-top"):
                yield Photo(id="photo", mode=mode)
                with Vertical(id="photo-info"):
                    yield Static("", id="photo-title")
                    yield Static("", id="reference-captions")
            yield Static(Text("Captions", style="bold"), classes="section")
            yield CaptionColumns(id="caption-columns")
            yield Static(Text("Neighbours", style="bold"), id="neighbours-title", classes="section")
            yield Vertical(id="neighbours")
            yield Static(Text("Prompt given to the VLM", style="bold"), id="prompt-title", classes="section")
            yield Static("", id="prompt", markup=False)

    def on_mount(self) -> None:
        self._load(self.ids[self.index])

    def reload(self) -> None:
        self._load(self.ids[self.index])

    @work(thread=True, group="photo", exclusive=True, exit_on_error=False, description="reading the photo's detail")
    def _load(self, image_id: str) -> None:
        self.post_message(PhotoLoaded(Browser(self.ws).photo_detail(image_id)))

    def action_step(self, step: int) -> None:
        if not self.ids:
            return
        self.index = cycle(range(len(self.ids)), self.index, step)
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
            refs.append("each caption scored against the others, mean: ", style="italic dim")
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
            mode = self.capsearch_app.image_mode
            await box.mount_all([NeighbourRow(n, rank, mode) for rank, n in enumerate(d.neighbours, 1)])
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
