"""Every captioner's caption side by side, and one neighbour with its preview, similarity and captions."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from pipeline.browse import CaptionView, NeighbourView
from tui.widgets.photo import Photo

def caption_text(c: CaptionView) -> Text:
    if c.status == "missing":
        return Text("not captioned yet", style="dim italic")
    if c.status == "failed":
        return Text(f"failed: {c.error or 'no reason recorded'}", style="red")
    if c.status == "empty" or not c.text:
        return Text("(empty caption)", style="yellow")
    text = Text(c.text)
    if c.stale:
        text.append("\n(earlier configuration)", style="dim")
    return text


class CaptionColumns(Horizontal):
    """One bordered column per captioner, with the caption's scores under it when there are any."""

    def show(self, captions: tuple[CaptionView, ...],
             scores: dict[str, dict[str, float | None]] | None = None) -> None:
        from tui.widgets.caption_metrics import photo_scores_text

        self.remove_children()
        columns = []
        for c in captions:
            text = caption_text(c)
            mine = (scores or {}).get(c.captioner)
            if mine and not c.stale:
                text.append("\n")
                text.append_text(photo_scores_text(mine))
            col = Static(text, classes=f"caption-column -{c.status}")
            col.border_title = c.captioner
            columns.append(col)
        if not columns:
            columns.append(Static(Text("no captioners enabled", style="dim")))
        self.mount_all(columns)


class NeighbourRow(Horizontal):
    """A small preview of a neighbour, its rank, similarity, id and captions."""

    def __init__(self, neighbour: NeighbourView, rank: int, image_mode: str = "auto") -> None:
        super().__init__(classes="neighbour")
        self.neighbour = neighbour
        self.rank = rank
        self.image_mode = image_mode

    def compose(self) -> ComposeResult:
        n = self.neighbour
        yield Photo(n.path, mode=self.image_mode, classes="neighbour-photo")
        strike = " strike" if n.duplicate else ""
        text = Text()
        text.append(f"#{self.rank} ", style="bold" + strike)
        text.append(f"{n.score:.3f} ", style="bold cyan" + strike)
        text.append(n.id, style="dim" + strike)
        if n.duplicate:
            text.append(f"  {n.duplicate} of this photo: its captions are left out of the prompt and the consensus",
                        style="yellow")
        for cap in n.captions:
            text.append(f"\n· {cap}", style=strike.strip())
        yield Static(text, classes="neighbour-text")
