"""The TUI's screens driven by keyboard on a small demo world: what the user sees must match the store."""
from __future__ import annotations

import io

import pytest
from rich.console import Console
from textual.widgets import DataTable, Input, Static

from pipeline.browse import Browser
from pipeline.search_service import SearchIndex
from pipeline.stages.registry import build_stage
from pipeline.status import workspace_status
from tests.fixtures.tui_world import settle
from tui.app import CapsearchApp
from tui.screens.photo import PhotoScreen
from tui.screens.missed import MissedScreen
from tui.screens.help import HelpScreen
from tui.screens.search import TOP_K, format_rank

# textual-image 0.12 reads pixels with an API Pillow 13 deprecates
IMAGE_WARNINGS = pytest.mark.filterwarnings("ignore:Image.Image.getdata:DeprecationWarning")
pytestmark = [pytest.mark.slow, pytest.mark.asyncio, IMAGE_WARNINGS]


def rows(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def shown(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


def rendered(content) -> str:
    """What a rich renderable looks like as plain text, 100 columns wide."""
    console = Console(width=100, record=True, file=io.StringIO(), color_system=None)
    console.print(content)
    return console.export_text()


def make_app(ws) -> CapsearchApp:
    return CapsearchApp(ws, image_mode="none")


async def test_pipeline_screen_lists_every_stage_with_its_counts(tui_workspace):
    app = make_app(tui_workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table_rows = rows(app.screen.query_one("#stages", DataTable))
    status = workspace_status(tui_workspace)
    assert [r[0].removesuffix(" ✓") for r in table_rows] == [s.stage for s in status.stages]
    for row, s in zip(table_rows, status.stages):
        assert row[1:] == [str(v) for v in (s.done, s.missing, s.failed, s.total)]
    by_stage = {r[0].removesuffix(" ✓"): r for r in table_rows}
    assert by_stage["ingest"][1:] == ["80", "0", "0", "80"]
    assert by_stage["caption:knn-consensus"][1:] == ["30", "0", "0", "30"]
    assert all(r[0].endswith("✓") for r in table_rows), "every stage is complete in the session workspace"


async def test_captions_filter_open_photo_and_step_through(tui_workspace):
    store = tui_workspace.store
    app = make_app(tui_workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        await settle(pilot)
        table = app.screen.query_one("#photos", DataTable)
        assert [r[0] for r in rows(table)] == store.image_ids("target")

        await pilot.press("slash", *"beach")
        await settle(pilot)
        filtered = [r[0] for r in rows(table)]
        assert 0 < len(filtered) < 30
        searchable = {p.id: p.search_text for p in Browser(tui_workspace).target_photos()}
        assert all("beach" in searchable[i] for i in filtered)
        assert f"{len(filtered)} of 30 target photos matching 'beach'" in shown(app, "#photos-count")

        await pilot.press("enter", "enter")   # leave the filter, open the highlighted photo
        await settle(pilot)
        assert isinstance(app.screen, PhotoScreen)
        first = filtered[0]
        assert shown(app, "#photo-title").startswith(first)
        prompts_hash = build_stage(tui_workspace, "prompts").config_hash()
        assert shown(app, "#prompt") == store.prompt_for(first, prompts_hash).text
        neighbours = store.neighbours(build_stage(tui_workspace, "neighbours").config_hash(), [first])[first]
        texts = [str(w.content) for w in app.screen.query(".neighbour-text")]
        assert [t.split()[2] for t in texts] == [n.id for n in neighbours]
        assert [float(t.split()[1]) for t in texts] == pytest.approx([n.score for n in neighbours], abs=1e-3)
        caption_hash = build_stage(tui_workspace, "caption", "knn-consensus").config_hash()
        caption = store.captions("knn-consensus", caption_hash, [first])[first].text
        column = app.screen.query_one(".caption-column")
        caption_line, scores_line = str(column.content).split("\n")          # the caption, then its scores
        assert column.border_title == "knn-consensus" and caption_line == caption and "CIDEr-D" in scores_line
        refs = shown(app, "#reference-captions")
        assert all(c in refs for c in store.reference_captions([first])[first])

        await pilot.press("n")
        await settle(pilot)
        assert shown(app, "#photo-title").startswith(filtered[1])
        await pilot.press("p", "p")
        await settle(pilot)
        assert shown(app, "#photo-title").startswith(filtered[-1]), "previous wraps around to the last photo"
        await pilot.press("escape")
        assert app.screen.query_one("#photos", DataTable)


async def test_search_ranks_as_you_type_and_cycles_methods(tui_workspace):
    index = SearchIndex(tui_workspace)
    app = make_app(tui_workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        screen = app.screen
        assert screen.methods == index.methods()
        await pilot.press(*"a pink tree")
        await settle(pilot)
        table = screen.query_one("#hits", DataTable)
        expected = index.search("a pink tree", screen.methods[0], TOP_K)
        assert [r[2] for r in rows(table)] == [h.image_id for h in expected]
        assert [r[1] for r in rows(table)] == [f"{h.score:.3f}" for h in expected]

        await pilot.press("ctrl+t")
        await settle(pilot)
        assert screen.method == index.methods()[1]
        expected = index.search("a pink tree", screen.method, TOP_K)
        assert [r[2] for r in rows(table)] == [h.image_id for h in expected]
        assert screen.method in shown(app, "#method") and "50 results" in shown(app, "#search-status")


async def test_search_shows_where_the_true_photo_of_an_evaluation_query_ranked(tui_workspace):
    index = SearchIndex(tui_workspace)
    app = make_app(tui_workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        screen = app.screen
        query = screen.query_one("#query", Input).value
        true_id, kind = index.evaluation_query(query)
        rank = index.rank_of(query, screen.method, true_id)
        assert f"true photo ranked #{format_rank(rank)} ({kind} query)" in shown(app, "#search-status")
        marked = [r[2] for r in rows(screen.query_one("#hits", DataTable)) if r[0].endswith("★")]
        assert marked == ([true_id] if rank <= TOP_K else [])


async def test_evaluation_table_chart_and_drill_down_into_search(tui_workspace):
    store = tui_workspace.store
    evals = {(r.method, r.query_kind, r.metric): r for r in store.evaluations()}
    app = make_app(tui_workspace)
    async with app.run_test(size=(120, 40)) as pilot:   # wide: intervals and "(baseline)" in the table
        await pilot.press("4")
        await settle(pilot)
        screen = app.screen
        assert screen.kind == "short"
        table = screen.query_one("#metrics", DataTable)
        shown_rows = rows(table)
        metrics = [str(c.label) for c in table.columns.values()][1:]
        assert metrics == ["R@1", "R@5", "R@10", "MRR", "MedR"]
        assert [r[0].split()[0] for r in shown_rows] == ["knn-consensus", "oracle"]
        assert "(baseline)" in shown_rows[0][0]
        for row in shown_rows:
            method = row[0].split()[0]
            for metric, cell in zip(metrics, row[1:]):
                digits = 1 if metric == "MedR" else 3
                assert cell.split()[0] == f"{evals[(method, 'short', metric)].estimate.value:.{digits}f}"
        chart = shown(app, "#chart")
        assert "knn-consensus" in chart and f"{evals[('oracle', 'short', 'R@10')].estimate.value:.3f}" in chart

        await pilot.press("k")
        await settle(pilot)
        assert screen.kind == "detail"
        assert rows(table)[0][3].split()[0] == f"{evals[('knn-consensus', 'detail', 'R@10')].estimate.value:.3f}"
        await pilot.press("k")
        await settle(pilot)

        await pilot.press("enter")            # knn-consensus, short queries
        await settle(pilot)
        assert isinstance(app.screen, MissedScreen)
        missed = rows(app.screen.query_one("#missed", DataTable))
        eval_hash = store.latest_eval_hash()
        expected = sorted((r for r in store.rankings(eval_hash, "knn-consensus", "short") if r.rank > 10),
                          key=lambda r: (-r.rank, r.image_id))
        assert [m[1] for m in missed] == [r.image_id for r in expected]
        assert missed, "the demo world has short queries that knn-consensus misses"
        rank, true_id, query = missed[0][0], missed[0][1], missed[0][2]

        await pilot.press("enter")            # open the worst one in Search
        await settle(pilot)
        assert app.current_mode == "search"
        search = app.screen
        assert search.query_one("#query", Input).value == query and search.method == "knn-consensus"
        assert f"ranked #{rank}" in shown(app, "#search-status"), "search and evaluation agree on the rank"
        assert true_id not in [r[2] for r in rows(search.query_one("#hits", DataTable))[:10]]


async def test_runs_screen_without_a_server_or_any_history_says_so(tui_workspace, monkeypatch):
    from tests.fixtures.prefect_harness import no_local_prefect_history

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    app = make_app(tui_workspace)
    with no_local_prefect_history(tui_workspace.root):
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("5")
            await settle(pilot)
            line = shown(app, "#prefect-line")
            assert not app.screen.query_one("#flow-runs", DataTable).display
            stage_runs = rows(app.screen.query_one("#stage-runs", DataTable))
    assert "No Prefect flow runs recorded yet" in line and "capsearch server" in line
    recorded = tui_workspace.store.stage_runs(limit=50)
    assert len(stage_runs) == len(recorded) > 0
    assert {r[0] for r in stage_runs} >= {"ingest", "caption:knn-consensus", "evaluate"}
    assert {r[1] for r in stage_runs} == {"completed"}


async def test_help_lists_every_key_of_every_screen(tui_workspace):
    from tui.screens.help import help_sections

    app = make_app(tui_workspace)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = "\n".join(rendered(s.content) for s in app.screen.query(Static))
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
    for title, _, keys in help_sections(CapsearchApp.BINDINGS):
        assert title.strip() in text
    for needle in ("run the whole pipeline", "ctrl+t", "ctrl+n", "Missed queries", "Open in Search", "Next",
                   "Query kind", "Chart metric", "Retry failed", "cancel the run"):
        assert needle.lower() in text.lower(), needle


def add_flow_run_of_another_workspace(url: str, workspace: str) -> str:
    """A completed ``capsearch-report`` flow run of another workspace in the server's history (as a run there
    would leave it), created through Prefect's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import FlowRunCreate  # noqa: F401 - the API the client wraps
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Completed

    from flows.stage_flows import stage_flow

    with temporary_settings({PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            run = client.create_flow_run(stage_flow("report"), parameters={"workspace": workspace, "stage": "report"},
                                         name="report", state=Completed())
    return str(run.id)


async def test_runs_screen_lists_this_workspaces_flow_runs_with_state_and_duration_at_80_columns(tui_workspace,
                                                                                               request, tmp_path):
    pytest.importorskip("flows.api")
    request.getfixturevalue("prefect_harness")
    from prefect.settings import PREFECT_API_URL

    from flows.naming import pipeline_run_name, stage_run_name
    from flows.runtime.prefect_runs import read_recent_runs

    url = PREFECT_API_URL.value()
    assert url, "the Prefect harness serves an API"
    other = add_flow_run_of_another_workspace(url, str(tmp_path / "elsewhere" / "demo"))
    assert other in {r.id for r in read_recent_runs(api_url=url, limit=200).runs}
    mine = read_recent_runs(api_url=url, workspace=str(tui_workspace.root)).runs
    assert mine and other not in {r.id for r in mine}
    app = CapsearchApp(tui_workspace, image_mode="none", prefect_api_url=url)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        line = shown(app, "#prefect-line")
        table = app.screen.query_one("#flow-runs", DataTable)
        assert table.display
        flow_runs = rows(table)
        x = table.region.x
        ends = {}
        for column in table.columns.values():
            x += column.get_render_width(table)
            ends[str(column.label)] = x
        stage_runs = app.screen.query_one("#stage-runs", DataTable)
        stage_ends, x = {}, stage_runs.region.x
        for column in stage_runs.columns.values():
            x += column.get_render_width(stage_runs)
            stage_ends[str(column.label)] = x
    assert url.removesuffix("/api") in line and f"{len(mine)} recent flow runs of demo" in line
    assert len(flow_runs) == len(mine), "only this workspace's flow runs are listed"
    # named as the flows name them in Prefect: the workspace, then what ran ("report" alone says neither)
    names = [r[0] for r in flow_runs]
    assert all(name.startswith("demo · ") for name in names), names
    assert pipeline_run_name(tui_workspace) in names
    assert stage_run_name(tui_workspace, "report") in names and stage_run_name(tui_workspace, "caption:knn-consensus") in names
    assert any(r[1] == "Completed" for r in flow_runs)
    assert all(r[2] != "-" for r in flow_runs if r[1] == "Completed"), "a finished run says how long it took"
    # state and duration are on the screen at 80 columns, in both tables
    assert ends["state"] <= 80 and ends["took"] <= 80
    assert stage_ends["status"] <= 80 and stage_ends["took"] <= 80
