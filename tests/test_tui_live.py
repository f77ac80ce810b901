"""The TUI shows and stops runs it did not start: a `capsearch run` in another process, watched and cancelled
from the Pipeline screen (Pilot); the Runs screen reads flow-run history without a Prefect server."""
from __future__ import annotations

import os

import signal

import pytest
from textual.widgets import DataTable, Static

from flows.api import run
from tests.fixtures.commands import start_command
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.flow_stages import N_IMAGES, PacedRowsStage, computed, demo_data, outputs, spec
from tests.fixtures.pilot import MessageLog, wait_for
from tui.app import CapsearchApp
from tui.messages import RunFinished, RunSeen, StageProgressed
from tui.screens.pipeline import CancelSent, RunStarted, StatusLoaded
from tui.widgets.progress import StageBar

pytestmark = pytest.mark.slow
BATCH = 8




@pytest.fixture
def paced(demo_world, tmp_path, prefect_harness):
    ws = make_workspace(tmp_path / "ws", data=demo_data(demo_world), orchestration={"batch_size": BATCH})
    run(ws, ["ingest"])
    return ws


@pytest.fixture
def harness_shell(shell_env, detached_runs):
    """A shell whose runs report to the session's Prefect server (a temporary one of its own would do too,
    only slower to start)."""
    import os

    return {**shell_env, "PREFECT_API_URL": os.environ["PREFECT_API_URL"]}


@pytest.mark.asyncio
async def test_a_run_started_in_a_shell_is_followed_by_the_pipeline_screen(paced, harness_shell, tmp_path):
    ws, label = paced, PacedRowsStage.name
    env = {**harness_shell, "CAPSEARCH_TEST_BATCH_SECONDS": "0.7"}
    proc = start_command(env, tmp_path / "run.log", "-w", str(ws.root), "run", "--stage", spec(PacedRowsStage))
    messages = MessageLog()
    app = CapsearchApp(ws, image_mode="none")
    async with app.run_test(size=(120, 40), message_hook=messages) as pilot:
        await wait_for(pilot, lambda: bool(messages.of(RunSeen)), 180, "the run to be seen")
        screen = app.screen
        assert messages.of(RunSeen)[0].run.pid == proc.pid
        await wait_for(pilot, lambda: bool(messages.of(RunFinished)), 300, "the run to end")
        await pilot.pause()
        bar = next(b for b in screen.query(StageBar) if b.stage == label)
        summary = str(screen.query_one("#pipeline-summary", Static).content)
        log = " ".join(" ".join(str(line.text) for line in screen.query_one("#log").lines).split())   # unwrapped
    assert proc.wait(timeout=60) == 0
    seen = [m.event.done for m in messages.of(StageProgressed) if m.event.stage == label and m.event.kind != "message"]
    assert len(set(seen)) >= 3 and seen == sorted(seen), f"the bar advanced step by step: {seen}"
    assert bar.event.kind == "finish" and bar.event.done == bar.event.total == N_IMAGES
    assert messages.of(RunFinished)[0].outcome.status == "completed"
    assert "idle" in summary and "run completed" in log
    assert f"pid {proc.pid}" in log, "the log names the run it follows"


@pytest.mark.asyncio
async def test_x_cancels_a_run_another_process_started(paced, harness_shell, tmp_path):
    ws, label = paced, PacedRowsStage.name
    env = {**harness_shell, "CAPSEARCH_TEST_BATCH_SECONDS": "1.0"}
    out = tmp_path / "run.log"
    proc = start_command(env, out, "-w", str(ws.root), "run", "--stage", spec(PacedRowsStage))
    messages = MessageLog()
    app = CapsearchApp(ws, image_mode="none")
    async with app.run_test(size=(120, 40), message_hook=messages) as pilot:
        await wait_for(pilot, lambda: bool(messages.of(StatusLoaded)), 60)
        await wait_for(pilot, lambda: len(outputs(ws, label)) >= BATCH, 180, "a batch to be done")
        await wait_for(pilot, lambda: bool(messages.of(RunSeen)), 60, "the TUI to see the run")
        await pilot.press("a")                          # refused: a run is going on
        await pilot.pause(0.3)
        await pilot.press("x")
        await wait_for(pilot, lambda: bool(messages.of(RunFinished)), 120, "the run to stop")
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert any("sent SIGTERM to process" in m.text for m in messages.of(CancelSent))
    assert messages.of(RunFinished)[0].outcome.status == "cancelled"
    kept = outputs(ws, label)
    assert BATCH <= len(kept) < N_IMAGES and len(kept) % BATCH == 0, "whole batches kept, later ones not started"
    assert ws.store.stage_runs(label, limit=1)[0].status == "cancelled"
    assert not messages.of(RunStarted), "a second run was not started while one was going on"
    summary = run(ws, [spec(PacedRowsStage)])      # the next run computes only what is missing
    assert summary.stage(label).done == N_IMAGES - len(kept)
    assert set(computed(ws, label).values()) == {1}


@pytest.mark.asyncio
async def test_the_runs_screen_reads_flow_runs_from_the_local_prefect_database(tui_workspace, monkeypatch):
    """No Prefect server configured: the history comes from the local Prefect database (here, the one the
    session's runs reported to) and every stage run names its flow run."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url     # the harness's database
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", getattr(url, "get_secret_value", lambda: url)())
    app = CapsearchApp(tui_workspace, image_mode="none", prefect_api_url=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("5")
        screen = app.screen
        await wait_for(pilot, lambda: "recent flow runs" in str(screen.query_one("#prefect-line", Static).content), 60)
        await wait_for(pilot, lambda: screen.stage_runs is not None, 60, "the stage runs")   # read by another worker
        line = str(screen.query_one("#prefect-line", Static).content)
        prefect = screen.prefect
        stage_table = screen.query_one("#stage-runs", DataTable)
        stage_runs = [[str(c) for c in stage_table.get_row_at(i)] for i in range(stage_table.row_count)]
        detail = str(screen.query_one("#stage-run-detail", Static).content)
    assert prefect.api_url is None and prefect.database is not None and prefect.runs
    assert "local Prefect database" in line and "`capsearch server` shows the same runs" in line
    starts = [r.started for r in prefect.runs if r.started]
    assert starts == sorted(starts, reverse=True), "newest first"
    # only this workspace's flow runs; each stage run names its Prefect flow run, as the flows name them
    # (``<workspace> · <stage>``), when that run is among the recent ones, else by id
    assert {r.workspace for r in prefect.runs} == {str(tui_workspace.root)}
    names = {r.id: f"{tui_workspace.name} · {r.stage}" for r in prefect.runs}
    recorded = tui_workspace.store.stage_runs(limit=50)
    assert len(stage_runs) == len(recorded)
    for row, r in zip(stage_runs, recorded):
        assert row[6] == names.get(r.flow_run_id, r.flow_run_id[:8]), (row, r)
    in_history = [r for r in recorded if r.flow_run_id in names]
    from flows.naming import stage_run_name

    assert in_history and all(names[r.flow_run_id] == stage_run_name(tui_workspace, f"{r.stage}:{r.variant}"
                                                                      if r.variant else r.stage) for r in in_history)
    assert recorded[0].flow_run_id in detail and "Prefect flow run" in detail


@pytest.mark.parametrize("known", ["run id", "process"])
def test_a_launched_run_that_ends_between_two_polls_is_still_reported(paced, known):
    """A run with nothing to compute is settled in a fraction of a second, often before the launch returns
    (it waits until the run has claimed the workspace) and before the TUI hears of the launch: its start and
    end are posted even though no poll saw it running, and only once. The launch knows the run's id, or with
    --wait (the run claims the workspace later) its process."""
    import time

    from flows.runtime.detach import Detached
    from pipeline.runs import RunWatch
    from tui.live import RunFollower

    posted: list = []
    follower = RunFollower(paced, posted.append)
    watch = RunWatch(paced.store)
    follower.poll(watch)
    launched_at = time.time()
    outcome = run(paced, ["ingest"])            # the launched run: nothing to compute, over between two polls
    assert outcome.settled_without_prefect and outcome.run_id is not None
    follower.poll(watch)                        # a poll between the run's end and the TUI hearing of its launch
    assert posted == []
    follower.launched(Detached("background", "ingest", pid=os.getpid(), started=launched_at,
                               run_id=outcome.run_id if known == "run id" else None))
    follower.poll(watch)
    finished = [m for m in posted if isinstance(m, RunFinished)]
    assert [m.outcome.run_id for m in finished] == [outcome.run_id]
    assert finished[0].outcome.status == "completed"
    assert [m.run.id for m in posted if isinstance(m, RunSeen)] == [outcome.run_id]
    follower.poll(watch)
    follower.poll(watch)
    assert len([m for m in posted if isinstance(m, RunFinished)]) == 1, "reported once"
