"""The caption metrics in the TUI, driven by keyboard on the session's demo world: the Evaluation screen's
caption-metrics table, and the Captions screen ordered worst first by any per-photo metric."""
from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static

from pipeline.caption_metrics.results import HUMAN, worst_first_key
from pipeline.caption_metrics.storage import load_caption_metrics, load_rows
from tests.fixtures.tui_world import settle
from tui.app import CapsearchApp
from tui.screens.photo import PhotoScreen

IMAGE_WARNINGS = pytest.mark.filterwarnings("ignore:Image.Image.getdata:DeprecationWarning")
pytestmark = [pytest.mark.slow, pytest.mark.asyncio, IMAGE_WARNINGS]


def rows(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_evaluation_screen_shows_the_caption_metrics_table(tui_workspace):
    result = load_caption_metrics(tui_workspace)
    app = CapsearchApp(tui_workspace, image_mode="none")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("4", "c")
        await settle(pilot)
        assert not app.screen.query_one("#caption-metrics-body").has_class("-hidden")
        assert app.screen.query_one("#evaluation-body").has_class("-hidden")
        table = rows(app.screen.query_one("#caption-metrics", DataTable))
        assert [r[0] for r in table] == result.metrics
        cider = next(r for r in table if r[0] == "CIDEr-D")
        for row, cell in zip(result.rows, cider[1:]):
            assert cell.startswith(f"{result.get(row, 'CIDEr-D').value:.3f}")
        detail = str(app.screen.query_one("#caption-metrics-detail", Static).content)
        assert "CLIPScore, RefCLIPScore not computed" in detail and "classical" in detail
        await pilot.press("c")
        await settle(pilot)
        assert not app.screen.query_one("#evaluation-body").has_class("-hidden")


async def test_captions_screen_orders_photos_worst_first_and_shows_their_scores(tui_workspace):
    result = load_caption_metrics(tui_workspace)
    knn = load_rows(tui_workspace, result)["knn-consensus"]
    app = CapsearchApp(tui_workspace, image_mode="none")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        for _ in range(len(result.metrics)):            # o steps from photo order through the metrics
            if app.screen.order_metric == "CIDEr-D":
                break
            await pilot.press("o")
            await settle(pilot)
        assert app.screen.order_metric == "CIDEr-D" and app.screen.score_row == "knn-consensus"
        table = rows(app.screen.query_one("#photos", DataTable))
        values = dict(zip(knn.ids, knn.scores["CIDEr-D"]))
        expected = sorted(knn.ids, key=lambda i: worst_first_key("CIDEr-D", values[i], i))
        assert [r[0] for r in table] == expected                     # worst first, ties by photo id
        assert [float(r[1]) for r in table] == pytest.approx([values[i] for i in expected], abs=5e-4)
        assert "CIDEr-D of knn-consensus, worst first" in str(app.screen.query_one("#photos-count", Static).content)
        await pilot.press("r")                                       # the human row's scores instead
        await settle(pilot)
        assert app.screen.score_row == HUMAN
        await pilot.press("r", "enter")
        await settle(pilot)
        assert isinstance(app.screen, PhotoScreen) and app.screen.ids[0] == expected[0]
        refs = str(app.screen.query_one("#reference-captions", Static).content)
        assert "each caption scored against the others, mean" in refs and "CIDEr-D" in refs
