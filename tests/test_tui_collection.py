"""The TUI on a person's photo folder: stages that do not apply, search over every photo with a scope key and
"more like this", the search index loaded in the background once the app has shown the stages, duplicates struck
out."""
from __future__ import annotations

import time

import pytest
from textual.widgets import DataTable, Input, Static

from pipeline.stages.run import run_stage
from pipeline.stages.registry import pipeline_stages
from tests.fixtures.collection import build_photo_folder
from tests.fixtures.photos import reencoded
from tests.fixtures.tui_world import settle
from tests.fixtures.workspaces import make_workspace
from tui.app import CapsearchApp
from tui.screens.photo import PhotoScreen
from tui.widgets.captions import NeighbourRow

IMAGE_WARNINGS = pytest.mark.filterwarnings("ignore:Image.Image.getdata:DeprecationWarning")
pytestmark = [pytest.mark.slow, pytest.mark.asyncio, IMAGE_WARNINGS]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A partly captioned folder with a re-encoded copy of one uncaptioned photo captioned in the CSV."""
    root = tmp_path_factory.mktemp("tui-collection")
    folder = build_photo_folder(root / "Photos", n=24, n_captioned=16)
    target = folder.uncaptioned[0]
    near = "edited/" + target.rsplit("/", 1)[-1].rsplit(".", 1)[0] + " (edited).jpg"
    (folder.root / near).parent.mkdir(parents=True, exist_ok=True)
    reencoded(folder.path(target), folder.root / near)
    with open(folder.captions, "a", encoding="utf-8") as fh:
        fh.write(f'"{near}","An edited copy: a lighthouse with a red roof ."\n')
    ws = make_workspace(root / "ws", data={"source": "folder", "path": str(folder.root),
                                           "captions": str(folder.captions)})
    for stage in pipeline_stages(ws):
        run_stage(stage)
    return ws, folder, target, near


def rows(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def shown(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


async def test_pipeline_screen_shows_stages_that_do_not_apply_with_the_reason(collection):
    ws, *_ = collection
    app = CapsearchApp(ws, image_mode="none", preload_search=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        stages = {r[0]: r for r in rows(app.screen.query_one("#stages", DataTable))}
        problems = rows(app.screen.query_one("#problems", DataTable))
    for name in ("queries", "evaluate", "report", "caption-metrics"):
        assert stages[f"{name} n/a"][1:] == ["–"] * 4
    assert stages["neighbours ✓"][1] != "–"
    reasons = [p for p in problems if p[0] == "n/a"]
    assert {p[1] for p in reasons} == {"queries", "evaluate", "report", "caption-metrics"}
    assert all("held-out" in p[3] for p in reasons)


async def test_the_search_index_is_ready_before_the_search_screen_is_opened(collection):
    ws, folder, *_ = collection
    from pipeline.models.cache import get_or_load  # noqa: F401 - the process-wide model cache the loader fills

    app = CapsearchApp(ws, image_mode="none")
    counts_shown_at_start = []
    start = app.search_loader.start

    def start_and_note(scope: str, version: int = 0):
        # The loader's imports and index build compete with the Pipeline screen's read of the stages: started
        # with the app, they made the stage counts appear four times later on a 10k-photo workspace.
        counts_shown_at_start.append(app.screen.MODE == "pipeline" and app.screen.status is not None)
        return start(scope, version)

    app.search_loader.start = start_and_note
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 120
        while not app.search_loader.ready("collection", app.data_version):
            assert time.monotonic() < deadline, "the index never finished loading"
            await pilot.pause(0.2)
        assert app.screen.MODE == "pipeline", "loaded without anyone visiting the Search screen"
        assert counts_shown_at_start[:1] == [True], "the preload started once the stage counts were shown"
        index = app.search_loader.get("collection", app.data_version)
        assert ("text", "a photo") in index._memory, "the text model has embedded a query already"

        captioned = folder.captioned[4]
        await pilot.press("3")
        await settle(pilot)
        await pilot.press(*folder.truth[captioned][0])
        await settle(pilot)
        screen = app.screen
        assert screen.index is index, "the Search screen uses the preloaded index"
        table = screen.query_one("#hits", DataTable)
        first = rows(table)[0]
        assert first[2] == captioned and first[3] == "human"
        assert "every photo" in shown(app, "#search-status")

        await pilot.press("ctrl+o")                    # the targets only
        await settle(pilot)
        assert "targets only" in shown(app, "#search-status")
        targets = set(ws.store.image_ids("target"))
        assert rows(table) and all(r[2] in targets for r in rows(table))

        await pilot.press("ctrl+o")
        await settle(pilot)
        await pilot.press("escape")                    # to the results
        table.move_cursor(row=0)
        await pilot.press("l")                         # more like this photo
        await settle(pilot)
        assert screen.query_one("#query", Input).value == f"like:{captioned}"
        assert captioned not in [r[2] for r in rows(table)]
        assert "photos like" in shown(app, "#search-status")


async def test_more_like_this_from_a_photo_and_duplicates_struck_out(collection):
    ws, folder, target, near = collection
    app = CapsearchApp(ws, image_mode="none")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(pilot)
        app.push_screen(PhotoScreen([target], 0))
        await settle(pilot)
        neighbours = list(app.screen.query(NeighbourRow))
        marked = [n for n in neighbours if n.neighbour.duplicate]
        assert [n.neighbour.id for n in marked] == [near] and marked[0].neighbour.duplicate == "near-duplicate"
        text = marked[0].query_one(".neighbour-text", Static).content
        assert "near-duplicate of this photo" in str(text)
        assert any("strike" in str(span.style) for span in text.spans), "a duplicate neighbour is struck out"
        assert "struck out" in str(app.screen.query_one("#neighbours-title", Static).content)

        await pilot.press("l")
        await settle(pilot)
        assert app.current_mode == "search"
        assert app.screen.query_one("#query", Input).value == f"like:{target}"
        first = rows(app.screen.query_one("#hits", DataTable))[0]
        assert first[2] == near, "its near-duplicate is the most similar photo"


async def test_the_evaluation_screen_says_why_a_collection_has_no_evaluation(collection):
    ws, *_ = collection
    app = CapsearchApp(ws, image_mode="none", preload_search=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await settle(pilot)
        title = shown(app, "#eval-title")
    assert "not applicable" in title and "held-out" in title, title
    assert "run the pipeline" not in title
