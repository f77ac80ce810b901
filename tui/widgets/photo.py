"""A photo drawn in the terminal with textual-image (half-blocks where graphics protocols are missing)."""
from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Static

IMAGE_MODES = ("auto", "halfcell", "unicode", "none")   # what a person may ask for (``--images``, ``tui.images``)


def image_widget_class(mode: str) -> type | None:
    """The textual-image widget for a mode (``IMAGE_MODES``, or what ``auto`` became once the terminal was asked:
    ``sixel``, ``tgp``); None when photos are not drawn."""
    if mode == "none":
        return None
    from textual_image import widget as ti

    return {"auto": ti.Image, "sixel": ti.SixelImage, "tgp": ti.TGPImage, "halfcell": ti.HalfcellImage,
            "unicode": ti.UnicodeImage}[mode]


class Photo(Container):
    """Shows the photo at ``path`` scaled to the widget's size (drawn the ``mode`` way: ``IMAGE_MODES``), or a
    line saying why it cannot."""

    def __init__(self, path: Path | None = None, *, mode: str = "auto", **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.mode = mode

    def compose(self) -> ComposeResult:
        yield from self._content()

    def _content(self) -> ComposeResult:
        mode = self.mode
        if self.path is None:
            yield Static("no photo", classes="photo-missing")
            return
        if not self.path.is_file():
            yield Static(f"photo not found: {self.path.name}", classes="photo-missing")
            return
        cls = image_widget_class(mode)
        if cls is None:
            yield Static(self.path.name, classes="photo-missing")
            return
        yield cls(str(self.path))

    async def show(self, path: Path | None) -> None:
        if path == self.path and self.children:
            return
        self.path = path
        await self.remove_children()
        await self.mount_all(list(self._content()))
