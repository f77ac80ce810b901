"""Runs that outlive the terminal, for real: the TUI and `capsearch run --detach` in tmux sessions that are then
killed (SIGHUP, as a dropped SSH connection), a second TUI and `status --follow` watching, `capsearch cancel`
from another process, and the same through `capsearch server` + `capsearch serve` (a Prefect deployment run).

Every process carries the test's tag (``process_tag``): background runs, their Prefect servers, deployment
runs. "Nothing is left" means nothing of this test. The commands find the home's local Prefect server up
(``warm_shell_env``), as a user's do after the first command; its own start and idle stop are
tests/test_local_server.py's and tests/test_signals.py's.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.api import run
from flows.naming import on_demand_deployment_name
from pipeline.run_owner import owner_state
from pipeline.runs import current_run, get_run, recent_runs
from pipeline.status import workspace_status
from tests.fixtures.commands import REPO, SHIM, run_command, start_command, wait_until, without_prefect
from tests.fixtures.pilot import wait_for
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.flow_stages import N_IMAGES, PacedRowsStage, computed, demo_data, outputs, spec

pytestmark = [pytest.mark.slow, pytest.mark.spread]   # each test starts and stops its own processes
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
BATCH = 8


class Tmux:
    """A tmux server of the test's own (-L), no user configuration."""

    def __init__(self, env: dict[str, str]):
        self.sock = f"capsearch-detach-{os.getpid()}-{time.monotonic_ns()}"
        self.env = env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=30)

    def new(self, name: str, command: str, width: int = 120, height: int = 40) -> None:
        keep = " ".join(f"{k}='{v}'" for k, v in self.env.items()
                        if k.startswith(("PREFECT_", "CAPSEARCH_")) or k in ("PYTHONPATH", "COLUMNS"))
        subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", "new-session", "-d", "-s", name, "-x", str(width),
                        "-y", str(height), f"cd '{REPO}' && env {keep} {command}"],
                       env=without_prefect(os.environ), check=True, timeout=30)

    def pane(self, name: str) -> str:
        return self("capture-pane", "-p", "-J", "-t", name).stdout     # -J: lines the terminal wrapped joined

    def keys(self, name: str, *keys: str) -> None:
        self("send-keys", "-t", name, *keys)

    def kill(self) -> None:
        self("kill-server")


def capsearch(*args: str) -> str:
    quoted = " ".join(f"'{a}'" for a in args)
    return f"'{sys.executable}' -c \"{SHIM}\" {quoted}"


def pane_done(text: str) -> int:
    """The items done over every progress bar on a TUI screen (``12/80 · 3.1/s``)."""
    return sum(int(m.group(1)) for m in re.finditer(r"(\d+)/\d+ ·", text))


@pytest.fixture
def long_run_ws(demo_world, tmp_path, prefect_harness):
    """Ingested, one photo per batch everywhere: running every other stage takes a minute or two."""
    ws = make_workspace(tmp_path / "ws", data=demo_data(demo_world, 30),
                        orchestration={"batch_size": 1, "cheap_batch_size": 1},
                        captioners={"enabled": ["knn-consensus"], "knn-consensus": {"batch_size": 1}})
    run(ws, ["ingest"])
    return ws


@pytest.fixture
def paced(demo_world, tmp_path, prefect_harness):
    ws = make_workspace(tmp_path / "ws", data=demo_data(demo_world), orchestration={"batch_size": BATCH})
    run(ws, ["ingest"])
    return ws


# -- the TUI's run outlives the TUI -------------------------------------------------------------------------
@needs_tmux
@pytest.mark.asyncio
async def test_a_tui_run_outlives_its_tmux_session_and_any_tui_or_shell_follows_it(long_run_ws, warm_shell_env,
                                                                                 process_tag, tmp_path, monkeypatch):
    ws = long_run_ws
    tmux = Tmux(warm_shell_env)
    try:
        tmux.new("first", capsearch("-w", str(ws.root), "tui"))
        wait_until(lambda: "caption:knn-consensus" in tmux.pane("first"), "the pipeline screen", 90,
                   show=lambda: tmux.pane("first"))
        tmux.keys("first", "a")
        wait_until(lambda: current_run(ws.store) is not None, "the run to claim the workspace", 120,
                   show=lambda: tmux.pane("first"))
        running = current_run(ws.store)
        assert "from the TUI" in running.started_by and running.log_path.startswith(str(ws.root / "logs"))
        [tui] = [p for p in process_tag.tagged() if p.command.endswith(" tui")]
        background = running.pid
        assert os.getsid(background) == background != os.getsid(tui.pid), "the run has a session of its own"

        tmux("kill-session", "-t", "first")          # SIGHUP: the terminal is gone
        wait_until(lambda: all(p.pid != tui.pid for p in process_tag.tagged()), "the first TUI to exit", 60)
        assert get_run(ws.store, running.id).is_running, "the run goes on without its TUI"

        # a new TUI, opened during the run, shows it and its progress moving
        tmux.new("second", capsearch("-w", str(ws.root), "tui"))
        wait_until(lambda: f"pid {background}" in " ".join(tmux.pane("second").split()),
                   "the second TUI to show the run", 90, show=lambda: tmux.pane("second"))
        wait_until(lambda: pane_done(tmux.pane("second")) > 0, "progress bars", 180, show=lambda: tmux.pane("second"))
        first_seen = pane_done(tmux.pane("second"))
        wait_until(lambda: pane_done(tmux.pane("second")) > first_seen, "the bars to move", 120,
                   show=lambda: tmux.pane("second"))

        # and a third one in this process: two TUIs on one workspace show the same run
        from tui.app import CapsearchApp
        from tui.messages import RunSeen

        seen: list = []
        app = CapsearchApp(ws, image_mode="none")
        async with app.run_test(size=(120, 40), message_hook=lambda m: seen.append(m) if isinstance(m, RunSeen) else None) as pilot:
            deadline = time.monotonic() + 30
            while not seen and time.monotonic() < deadline:
                await pilot.pause(0.2)
        assert seen and seen[0].run.id == running.id

        # a plain shell follows it to its end
        follow = run_command(warm_shell_env, "-w", str(ws.root), "status", "--follow", timeout=600)
        assert follow.returncode == 0, follow.stdout + follow.stderr
        assert "the run completed" in follow.stdout and not get_run(ws.store, running.id).is_running
        # the TUI polls the store twice a second: it shows the end a moment after the shell saw it
        wait_until(lambda: "run completed" in " ".join(tmux.pane("second").split()), "the second TUI to show the end",
                   30, show=lambda: tmux.pane("second"))
    finally:
        tmux.kill()
    final = get_run(ws.store, running.id)
    assert final.status == "completed"
    counts = {s.stage: s for s in workspace_status(ws).stages}
    assert counts["caption:knn-consensus"].missing == 0 and counts["evaluate"].missing == 0
    alive = process_tag.wait_gone(20)
    assert alive == [], f"left behind: {[str(p) for p in alive]}"
    # (read once the process is gone: it prints its summary after it has recorded the run's end)
    log = Path(final.log_path).read_text(errors="replace")
    assert "caption:knn-consensus" in log and "stages:" in log, "the background run's output is in its log"


@needs_tmux
def test_run_detach_returns_at_once_and_the_run_survives_its_terminal(paced, warm_shell_env, process_tag, tmp_path):
    ws, label = paced, PacedRowsStage.name
    env = {**warm_shell_env, "CAPSEARCH_TEST_BATCH_SECONDS": "0.5"}
    tmux = Tmux(env)
    try:
        tmux.new("shell", capsearch("-w", str(ws.root), "run", "--detach", "--stage", spec(PacedRowsStage))
                 + "; echo DETACH-EXITED $?; sleep 600")
        wait_until(lambda: "DETACH-EXITED 0" in tmux.pane("shell"), "run --detach to return", 120,
                   show=lambda: tmux.pane("shell"))
        text = " ".join(tmux.pane("shell").split())
        assert "started in the background" in text and "status --follow" in text and "cancel" in text
        running = current_run(ws.store)
        assert running is not None and running.log_path
        tmux("kill-session", "-t", "shell")
    finally:
        tmux.kill()
    follow = run_command(env, "-w", str(ws.root), "status", "--follow", timeout=600)
    assert follow.returncode == 0 and "the run completed" in follow.stdout, follow.stdout + follow.stderr
    assert len(outputs(ws, label)) == N_IMAGES and set(computed(ws, label).values()) == {1}
    assert "paced-rows-test" in Path(running.log_path).read_text()
    alive = process_tag.wait_gone(20)
    assert alive == [], f"the background run or its Prefect server outlived it: {[str(p) for p in alive]}"


def test_capsearch_cancel_stops_a_background_run_after_the_batch_in_flight(paced, warm_shell_env, process_tag, tmp_path):
    ws, label = paced, PacedRowsStage.name
    env = {**warm_shell_env, "CAPSEARCH_TEST_BATCH_SECONDS": "1.0"}
    assert "no run is going on" in run_command(env, "-w", str(ws.root), "cancel").stdout
    started = run_command(env, "-w", str(ws.root), "run", "--detach", "--stage", spec(PacedRowsStage))
    assert started.returncode == 0, started.stdout + started.stderr
    running = current_run(ws.store)
    wait_until(lambda: len(outputs(ws, label)) >= 2 * BATCH, "two batches were done", 240)

    cancel = run_command(env, "-w", str(ws.root), "cancel")
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    text = " ".join(cancel.stdout.split())
    assert f"sent SIGTERM to process {running.pid}" in text and "the run is cancelled" in text
    assert owner_state(running.owner) == "dead", "`cancel` said the run is cancelled while its process still ran"
    assert text.index("stopping") < text.index("the run is cancelled") and f"process {running.pid} has exited" in text
    kept = outputs(ws, label)
    assert process_tag.wait_gone(20) == []           # nothing left that could write another batch
    assert outputs(ws, label) == kept, "no batch ran after the cancel"
    assert 2 * BATCH <= len(kept) < N_IMAGES and len(kept) % BATCH == 0, "the batch in flight finished, no other"
    assert get_run(ws.store, running.id).status == "cancelled"
    assert ws.store.stage_runs(label, limit=1)[0].status == "cancelled"

    summary = run(ws, [spec(PacedRowsStage)])       # the next run computes only what is missing
    assert summary.stage(label).done == N_IMAGES - len(kept)
    assert set(computed(ws, label).values()) == {1}


# -- through capsearch server + capsearch serve --------------------------------------------------------------------
@pytest.mark.asyncio
async def test_with_server_and_serve_up_runs_go_through_the_deployment(paced, shell_env, process_tag, tmp_path,
                                                                       monkeypatch):
    from flows.runtime.server import free_port

    ws, label = paced, PacedRowsStage.name
    # 2 s batches: between the first batch and the last, `capsearch cancel` has to reach Prefect, and the runner
    # has to see the cancel and signal the run
    env = {**shell_env, "CAPSEARCH_TEST_BATCH_SECONDS": "2.0"}
    port = free_port()
    assert port != 4200
    server = start_command(env, tmp_path / "server.log", "server", "--port", str(port))
    serve = None
    try:
        wait_until(lambda: "Prefect UI:" in (tmp_path / "server.log").read_text(errors="replace"), "the server",
                   240, proc=server, out=tmp_path / "server.log")
        # the served UI asks its API at the port it was started on
        ui = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=10).json()
        assert ui["api_url"] == f"http://127.0.0.1:{port}/api"

        serve = start_command(env, tmp_path / "serve.log", "-w", str(ws.root), "serve")
        wait_until(lambda: "serving; Ctrl-C stops" in (tmp_path / "serve.log").read_text(errors="replace"),
                   "serve to be serving", 240, proc=serve, out=tmp_path / "serve.log")
        api = f"http://127.0.0.1:{port}/api"

        # a run started from the TUI becomes a run of the on-demand deployment
        from tui.app import CapsearchApp
        from tui.messages import RunFinished
        from tui.screens.pipeline import RunLaunched, StatusLoaded

        monkeypatch.setenv("PREFECT_API_URL", api)
        messages: list = []
        app = CapsearchApp(ws, image_mode="none")
        async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
            await wait_for(pilot, lambda: any(isinstance(m, StatusLoaded) for m in messages), 60, "the stages")
            await pilot.press("r")                          # the highlighted stage: ingest
            deadline = time.monotonic() + 300
            while not any(isinstance(m, RunFinished) for m in messages) and time.monotonic() < deadline:
                await pilot.pause(0.3)
        launched = next(m.detached for m in messages if isinstance(m, RunLaunched))
        finished = next(m for m in messages if isinstance(m, RunFinished))
        assert launched.how == "deployment" and launched.deployment.endswith(f"/{on_demand_deployment_name(ws)}")
        assert finished.outcome.status == "completed", finished.outcome.error
        deployment, flow_run = _deployment_and_flow_run(api, launched.deployment, launched.flow_run_id)
        assert flow_run.deployment_id == deployment.id and flow_run.state.is_completed()
        assert "from the TUI" in (recent_runs(ws.store)[0].started_by)

        # `run --detach` goes the same way, and `capsearch cancel` cancels it through Prefect
        started = run_command(env, "-w", str(ws.root), "run", "--detach", "--stage", spec(PacedRowsStage))
        assert started.returncode == 0 and "started through `capsearch serve`" in started.stdout, started.stdout
        wait_until(lambda: len(outputs(ws, label)) >= BATCH, "a batch of the deployment run", 300, proc=serve,
                   out=tmp_path / "serve.log")
        running = current_run(ws.store)
        assert running.deployment.endswith(f"/{on_demand_deployment_name(ws)}") and running.flow_run_id
        cancel = run_command(env, "-w", str(ws.root), "cancel", timeout=300)
        assert cancel.returncode == 0 and "asked Prefect to cancel" in cancel.stdout, cancel.stdout + cancel.stderr
        final = get_run(ws.store, running.id)
        assert final.status == "cancelled", final
        kept = outputs(ws, label)
        assert BATCH <= len(kept) < N_IMAGES and len(kept) % BATCH == 0, "stopped after the batch in flight"
        stage_run = ws.store.stage_runs(label, limit=1)[0]
        # stopped between batches by capsearch's handler of the runner's SIGTERM, not interrupted by Prefect's
        assert stage_run.status == "cancelled" and not stage_run.message, stage_run
        _, flow_run = _deployment_and_flow_run(api, running.deployment, running.flow_run_id)
        assert flow_run.state.is_cancelled()
    finally:
        for proc in (serve, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
    assert process_tag.wait_gone(30) == []


def _deployment_and_flow_run(api: str, deployment: str, flow_run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 60
            while True:
                flow_run = client.read_flow_run(flow_run_id)
                if flow_run.state.is_final() or time.monotonic() > deadline:
                    return client.read_deployment_by_name(deployment), flow_run
                time.sleep(0.5)
