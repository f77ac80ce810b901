"""At 80x24 nothing that matters is cut, and at 120x40 a photo fills its box: measured on the laid-out widgets
(where each column and line ends on the screen), the way a person reads the screen."""
from __future__ import annotations

import time

import pytest
from rich.text import Text
from textual.widgets import DataTable, Input, Label, Static

from pipeline.progress import ProgressEvent
from pipeline.runs import RunInfo
from tests.fixtures.tui_world import settle
from tui.app import CapsearchApp
from tui.messages import RunSeen, StageProgressed
from tui.widgets.progress import StageBar, progress_line

IMAGE_WARNINGS = pytest.mark.filterwarnings("ignore:Image.Image.getdata:DeprecationWarning")
pytestmark = [pytest.mark.asyncio, IMAGE_WARNINGS]
SMALL = (80, 24)


def plain(static: Static) -> str:
    content = static.content
    return content.plain if isinstance(content, Text) else str(content)


def column_spans(table: DataTable) -> dict[str, tuple[int, int]]:
    """Each column's first and last screen column (the table's left edge included), by label."""
    x = table.region.x
    spans = {}
    for column in table.columns.values():
        width = column.get_render_width(table)
        spans[str(column.label)] = (x, x + width - 1)
        x += width
    return spans


def fully_visible(table: DataTable, label: str) -> bool:
    first, last = column_spans(table)[label]
    return table.region.x <= first and last < table.region.right and table.scroll_x == 0


async def test_progress_bars_keep_count_rate_and_eta_at_80x24(tui_workspace):
    app = CapsearchApp(tui_workspace, image_mode="none", preload_search=False)
    now = time.monotonic()
    events = [ProgressEvent("embed-captions:knn-consensus", "advance", done=3120, total=10000, failures=3,
                            started_at=now - 24, at=now),
              ProgressEvent("caption:knn-consensus", "advance", done=12, total=400, started_at=now - 4, at=now),
              ProgressEvent("ingest", "finish", done=800, total=800, started_at=now - 30, at=now - 25)]
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.post_message(RunSeen(RunInfo(1, '{"pid": 1, "host": "h"}', "running", "every stage", "a test",
                                            time.time())))
        await pilot.pause()
        for event in events:
            screen.post_message(StageProgressed(event))
        await settle(pilot)
        bars = {bar.stage: bar for bar in screen.query(StageBar)}
        assert set(bars) == {e.stage for e in events}
        for event in events:
            stats = bars[event.stage].query_one(".stage-stats", Label)
            text = progress_line(event)
            assert "/s" in text or "done" in text
            assert stats.region.right <= SMALL[0], f"{event.stage}: the numbers run off the screen"
            assert stats.content_region.width >= len(text), f"{event.stage}: {text!r} is cut"


async def test_search_at_80x24_keeps_the_true_photos_rank_and_what_matched(tui_workspace):
    from pipeline.search_service import SearchIndex
    from tui.screens.search import format_rank

    index = SearchIndex(tui_workspace)
    app = CapsearchApp(tui_workspace, image_mode="none", preload_search=False)   # with timings, as a person sees it
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("ctrl+n")                # an evaluation query: the line says where its true photo ranked
        await settle(pilot)
        screen = app.screen
        query = screen.query_one("#query", Input).value
        true_id, kind = index.evaluation_query(query)
        rank = format_rank(index.rank_of(query, screen.method, true_id))
        status = screen.query_one("#search-status", Static)
        line = plain(status)
        assert f"true photo ranked #{rank} ({kind} query)" in line and " ms" in line
        assert len(line) <= status.content_region.width, f"the status line is cut: {line!r}"
        table = screen.query_one("#hits", DataTable)
        assert fully_visible(table, "matched")
        first, last = column_spans(table)["caption"]
        assert min(last, table.region.right - 1) - first + 1 >= 12, "the caption column is too narrow to read"
        legend = plain(screen.query_one("#hits-legend", Static))
        hits = index.search(query, screen.method, 50)
        codes = {str(table.get_row_at(i)[3]) for i in range(table.row_count)}
        for hit in hits:
            assert hit.matched_label in legend
        for code in codes:
            assert f"{code} " in legend
        assert len(legend) <= screen.query_one("#hits-legend", Static).content_region.width


async def test_evaluation_at_80x24_shows_every_metric_column(tui_workspace):
    app = CapsearchApp(tui_workspace, image_mode="none", preload_search=False)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("4")
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#metrics", DataTable)
        for label in ("method", "R@1", "R@5", "R@10", "MRR", "MedR"):
            assert fully_visible(table, label), f"{label} is off the screen"
        title = plain(screen.query_one("#eval-title", Static))
        assert "* baseline" in title and len(title) <= SMALL[0] - 2
        baseline = [str(table.get_row_at(i)[0]) for i in range(table.row_count) if str(table.get_row_at(i)[0])
                    .endswith("*")]
        assert baseline == ["knn-consensus*"]
        detail = plain(screen.query_one("#eval-detail", Static))
        assert "MedR" in detail and "[" in detail, "the intervals are in the line under the table"
        await pilot.resize_terminal(120, 40)
        await settle(pilot)
        assert "(baseline)" in str(table.get_row_at(0)[0]) and "±" in str(table.get_row_at(0)[1])


def drawn_cells(app, region) -> tuple[int, int]:
    """Columns and rows of ``region`` where the screen shows photo pixels (half-block characters)."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None,
                      record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True))
    lines = console.export_text().splitlines()[region.y:region.bottom]
    cells = [[ch in "▀▄█" for ch in line[region.x:region.right]] for line in lines]
    rows = sum(any(row) for row in cells)
    cols = sum(any(row[i] for row in cells if i < len(row)) for i in range(region.width))
    return cols, rows


async def test_a_photo_fills_its_box_at_120x40(tui_workspace):
    from tui.widgets.photo import Photo

    app = CapsearchApp(tui_workspace, image_mode="halfcell", preload_search=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        box = app.screen.query_one("#photo", Photo)
        d = app.screen.detail
        assert (d.width, d.height) == (320, 240)
        width, height = drawn_cells(app, box.content_region)
        inside = box.content_region.size
        assert width == inside.width or height == inside.height, \
            f"a {d.width}x{d.height} photo drawn {width}x{height} in a {inside} box"
        # the aspect is kept: cells are twice as tall as wide (textual-image's 10x20 pixels when not asked)
        assert abs((width * 10) / (height * 20) - d.width / d.height) < 0.15
