"""SVG snapshots of every screen at 80x24 and 120x40 (pytest-textual-snapshot; update with --snapshot-update).

80x24 is the smallest terminal the TUI is made for (nothing that matters may be cut there: the numbers of the
progress bars, the search table's matched column, the evaluation's MedR, the Runs screen's state and duration);
120x40 is where screens turn wide and tall (larger photos, full labels).

The snapshots use a copy of the session's demo-world workspace with the times of its stage runs fixed,
photos drawn with half-blocks, and search timings hidden, so that they are the same on every run.
"""
from __future__ import annotations

import shutil
import time

import pytest

from tests.fixtures.tui_world import settle
from tui.app import CapsearchApp

# textual-image 0.12 reads pixels with an API Pillow 13 deprecates
IMAGE_WARNINGS = pytest.mark.filterwarnings("ignore:Image.Image.getdata:DeprecationWarning")
pytestmark = [pytest.mark.slow, IMAGE_WARNINGS]
SIZES = [(80, 24), (120, 40)]
FIXED_START = 1_790_000_000.0   # 2026-09-21 14:13:20 UTC


@pytest.fixture(scope="module")
def snapshot_workspace(tui_workspace, tmp_path_factory):
    """The session workspace, copied, with its stage-run history replaced by one run per stage at fixed
    times and flow run ids (the recorded history depends on Prefect's cache and on timing)."""
    from pipeline.stages.registry import pipeline_stages
    from pipeline.workspace import Workspace

    root = tmp_path_factory.mktemp("tui-snap") / "demo"
    shutil.copytree(tui_workspace.root, root, ignore=shutil.ignore_patterns("logs"))
    ws = Workspace(root)
    store = ws.store
    store.conn.execute("DELETE FROM stage_runs")
    for stage in pipeline_stages(ws):
        counts = stage.counts()
        run_id = store.start_stage_run(stage.name, stage.config_hash(), stage.config(), stage.variant)
        store.finish_stage_run(run_id, "completed", counts.done, counts.failed)
    with store.transaction() as c:
        c.execute("UPDATE stage_runs SET started_at = ? + id * 60, finished_at = ? + id * 60 + id, "
                  "flow_run_id = printf('%08x-5a7e-4c0d-9a11-%012x', id * 2654435761 % 4294967296, id)",
                  (FIXED_START, FIXED_START))
    return ws


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def app_for(ws) -> CapsearchApp:
    return CapsearchApp(ws, image_mode="halfcell", timings=False, prefect_api_url=None)


def show_progress(pilot) -> None:
    """The Pipeline screen's bars in the middle of a run (fixed times, so rates and ETAs are the same every time):
    one stage done, one running with failures, one that does not apply."""
    from pipeline.progress import ProgressEvent
    from tui.widgets.progress import ProgressPanel

    panel = pilot.app.screen.query_one(ProgressPanel)
    panel.display = True
    for event in (ProgressEvent("ingest", "finish", done=800, total=800, started_at=100.0, at=105.0),
                  ProgressEvent("embed-captions:knn-consensus", "advance", done=3120, total=10000, failures=3,
                                started_at=106.0, at=130.0),
                  ProgressEvent("caption-metrics", "not-applicable", started_at=130.0, at=130.0,
                                message="the targets have no held-out human captions to make evaluation queries "
                                        "from")):
        panel.show_event(event)


def steps_then_settle(*steps: tuple[str, ...]):
    """Press each step's keys (or call it, given the pilot), then wait for the screen to settle."""
    async def run_before(pilot) -> None:
        await settle(pilot)
        for keys in steps:
            if callable(keys):
                keys(pilot)
            else:
                await pilot.press(*keys)
            await settle(pilot)

    return run_before


SCREENS = {
    "pipeline": (),
    "pipeline-running": (show_progress,),
    "captions": (("2",),),
    "photo": (("2",), ("enter",)),
    "search": (("3",), (*"three yellow kites", "enter")),
    "search-evaluation-query": (("3",), ("ctrl+n",), ("escape",)),   # the results focused: no blinking cursor
    "evaluation": (("4",),),
    "missed": (("4",), ("enter",)),
    "runs": (("5",),),
    "help": (("question_mark",),),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen_snapshot(screen, size, snapshot_workspace, snap_compare, utc, monkeypatch):
    from pipeline.caption_metrics.java import java_path

    if screen == "photo" and java_path() is None:
        pytest.skip("the photo screen shows each caption's METEOR, which needs a Java runtime")
    from tests.fixtures.prefect_harness import no_local_prefect_history

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(snapshot_workspace.root / "no-server-prefect-home"))
    with no_local_prefect_history(snapshot_workspace.root):
        assert snap_compare(app_for(snapshot_workspace), terminal_size=size,
                            run_before=steps_then_settle(*SCREENS[screen]))
