"""What the user sees when a screen cannot read what it shows: each screen's loader fails for real (a table of a
copy of the session's workspace overwritten with garbage: SQLite's "database disk image is malformed"), and the
reason reaches the screen (its loading line), a notification naming what failed, and the Pipeline screen's
Problems pane. One path for every worker: ``CapsearchApp.on_worker_state_changed``."""
from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static
from textual.widgets._toast import Toast

from tests.fixtures.damaged_store import MALFORMED, copy_workspace, corrupt_tables
from tests.fixtures.tui_world import settle
from tui.app import CapsearchApp
from tui.screens.evaluation import EvaluationScreen
from tui.screens.missed import MissedScreen
from tui.screens.photo import PhotoScreen

IMAGE_WARNINGS = pytest.mark.filterwarnings("ignore:Image.Image.getdata:DeprecationWarning")
pytestmark = [pytest.mark.slow, pytest.mark.asyncio, IMAGE_WARNINGS]


@pytest.fixture
def damaged(tui_workspace, tmp_path):
    """``damaged(*tables)``: a copy of the session's workspace with those tables unreadable."""
    def make(*tables: str):
        ws = copy_workspace(tui_workspace, tmp_path / "ws")
        corrupt_tables(ws, *tables)
        return ws

    return make


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


def toasts(app) -> list[str]:
    """The notifications on screen, as the user reads them (title, then message)."""
    return [str(t.render()) for t in app.screen.query(Toast)]


async def assert_failure_shown(app, pilot, what: str, line: str | None) -> None:
    """``what`` (a worker's description) failed with the store's reason: in the screen's ``line``, in a
    notification, and in the Pipeline screen's Problems pane."""
    if line is not None:
        shown = text_of(app, line)
        assert shown.startswith(f"{what} failed: ") and MALFORMED in shown, shown
    assert any(what in t and MALFORMED in t for t in toasts(app)), toasts(app)
    await pilot.press("1")
    await settle(pilot)
    table = app.screen.query_one("#problems", DataTable)
    problems = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
    assert any(p[0] == "error" and p[2] == what and MALFORMED in p[3] for p in problems), problems


async def test_pipeline_screen_says_why_it_cannot_read_the_workspace(damaged):
    ws = damaged("problems")
    app = CapsearchApp(ws, image_mode="none", preload_search=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await assert_failure_shown(app, pilot, "reading the workspace's stages", "#pipeline-summary")
        log = "\n".join(line.text for line in app.screen.query_one("#log").lines)
        assert "reading the workspace's stages failed" in log and MALFORMED in log


async def test_captions_list_says_why_it_cannot_list_the_photos(damaged):
    ws = damaged("reference_captions")
    app = CapsearchApp(ws, image_mode="none", preload_search=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("2")
        await settle(pilot)
        assert "loading photos" not in text_of(app, "#photos-count")
        await assert_failure_shown(app, pilot, "reading the target photos and their caption metrics",
                                   "#photos-count")


async def test_photo_detail_says_why_it_cannot_show_the_photo(damaged):
    ws = damaged("prompts")
    target = ws.store.image_ids("target")[0]
    app = CapsearchApp(ws, image_mode="none", preload_search=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("2")
        await settle(pilot)
        assert app.screen.query_one("#photos", DataTable).row_count == 30, "the list itself reads"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, PhotoScreen) and app.screen.ids[0] == target
        shown = text_of(app, "#photo-title")
        assert shown.startswith("reading the photo's detail failed: ") and MALFORMED in shown
        assert any("reading the photo's detail" in t and MALFORMED in t for t in toasts(app))
        await pilot.press("escape")
        await assert_failure_shown(app, pilot, "reading the photo's detail", None)


async def test_search_says_why_it_cannot_load_the_index(damaged):
    ws = damaged("images")
    app = CapsearchApp(ws, image_mode="none")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press(*"a dog")
        await settle(pilot)
        assert not app.screen.ready
        await pilot.press("escape")                     # out of the query box: 1 switches screens
        await assert_failure_shown(app, pilot, "loading the search index", "#search-status")


async def test_evaluation_says_why_it_cannot_read_the_metrics(damaged):
    ws = damaged("evaluations")
    app = CapsearchApp(ws, image_mode="none", preload_search=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("4")
        await settle(pilot)
        await assert_failure_shown(app, pilot, "reading the evaluation", "#eval-title")


async def test_evaluation_says_why_it_cannot_read_the_caption_metrics(damaged):
    ws = damaged("caption_metric_values")
    app = CapsearchApp(ws, image_mode="none", preload_search=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("4")
        await settle(pilot)
        assert app.screen.query_one("#metrics", DataTable).row_count > 0, "the retrieval metrics read"
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, EvaluationScreen)
        await assert_failure_shown(app, pilot, "reading the caption metrics", "#caption-metrics-title")


async def test_missed_queries_say_why_they_cannot_be_read(damaged):
    ws = damaged("rankings")
    app = CapsearchApp(ws, image_mode="none", preload_search=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, MissedScreen)
        await assert_failure_shown(app, pilot, "reading the queries the method missed", "#missed-title")


async def test_runs_screen_says_why_it_cannot_read_the_stage_runs(damaged, monkeypatch):
    from tests.fixtures.prefect_harness import no_local_prefect_history

    ws = damaged("stage_runs")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    app = CapsearchApp(ws, image_mode="none", preload_search=False, prefect_api_url=None)
    with no_local_prefect_history(ws.root):
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.press("5")
            await settle(pilot)
            assert "No Prefect flow runs recorded yet" in text_of(app, "#prefect-line"), "flow runs read on their own"
            await assert_failure_shown(app, pilot, "reading the workspace's stage runs", "#stage-runs-title")


async def test_runs_screen_says_why_the_prefect_server_does_not_answer(tui_workspace, unused_tcp_port):
    url = f"http://127.0.0.1:{unused_tcp_port}/api"       # nothing listens there
    app = CapsearchApp(tui_workspace, image_mode="none", preload_search=False, prefect_api_url=url)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("5")
        await settle(pilot)
        line = text_of(app, "#prefect-line")
        assert line.startswith("reading the Prefect flow runs failed: ") and f"cannot read flow runs from {url}" in line
        assert app.screen.query_one("#stage-runs", DataTable).row_count > 0, "stage runs read on their own"
        assert any("reading the Prefect flow runs" in t and url in t for t in toasts(app))


async def test_a_run_that_cannot_start_says_why_and_the_screen_is_idle_again(tui_workspace, tmp_path):
    """The background `capsearch run` ends at once (its configuration became unreadable after the TUI opened):
    the reason from its log reaches the user the same way, and the Pipeline screen is no longer 'starting'."""
    ws = copy_workspace(tui_workspace, tmp_path / "ws")
    app = CapsearchApp(ws, image_mode="none", preload_search=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        with open(ws.root / "capsearch.toml", "a", encoding="utf-8") as fh:
            fh.write("\nthis is not TOML [\n")
        await pilot.press("r")                          # the highlighted stage: ingest
        for _ in range(120):
            if app.failures:
                break
            await pilot.pause(0.5)
        await settle(pilot)
        what = "starting the run"
        assert [f.what for f in app.failures] == [what]
        reason = app.failures[0].reason
        assert reason.startswith("the background run ended at once (exit code 1)") and "capsearch.toml" in reason
        assert any(what in t and "ended at once" in t for t in toasts(app)), toasts(app)
        log = "\n".join(line.text for line in app.screen.query_one("#log").lines)
        assert f"{what} failed: the background run ended at once" in log
        assert text_of(app, "#pipeline-summary").endswith("idle")
        assert app.screen.launching is None and app.screen.running is None
        table = app.screen.query_one("#problems", DataTable)
        problems = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert any(p[2] == what and "ended at once" in p[3] for p in problems), problems
