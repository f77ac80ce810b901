"""Real processes, real signals: SIGTERM, SIGINT, SIGHUP and SIGKILL of `capsearch run`, a product stage,
`capsearch tui` in tmux and `capsearch server`.

Each command runs as a subprocess the way a user starts it, with no Prefect server configured, so it starts
the shared local one (``flows.runtime.local_server``), which outlives it on purpose and stops by itself 2 s
after the last command used it (``CAPSEARCH_SERVER_IDLE`` of the tests), SIGKILL of the command included.
The tests whose subject is not that server find it up (``warm_command_env``: the session's), as a user's
second command does.
Every process a test starts
carries a tag in its environment (``process_tag``), so "nothing is left" means nothing of *this* test,
wherever init re-parented it. After a stop the next run must compute only what was missing.
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.api import run
from tests.fixtures.commands import SHIM, wait_until, without_prefect
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.flow_stages import (N_IMAGES, SlowRowsStage, StuckRowsStage, computed, demo_data, outputs,
                                      spec)

pytestmark = [pytest.mark.slow, pytest.mark.spread]   # each test starts and stops its own processes
REPO = Path(__file__).resolve().parents[1]
BATCH = 8
N_TARGETS = 30


@pytest.fixture
def prefect_home(command_prefect_home):
    """The session's Prefect home for commands, migrated once (what `capsearch init` does), no server up."""
    return command_prefect_home


@pytest.fixture
def command_env(shell_env):
    """The environment of a user's shell (tests.fixtures.commands), 120 columns wide."""
    return {**shell_env, "COLUMNS": "120"}


@pytest.fixture
def warm_command_env(warm_shell_env):
    """The same shell after its first command: the home's local Prefect server is up (the session's), for the
    tests whose subject is not that server."""
    return {**warm_shell_env, "COLUMNS": "120"}


@pytest.fixture
def ingested(demo_world, tmp_path, prefect_harness):
    ws = make_workspace(tmp_path / "ws", data=demo_data(demo_world, N_TARGETS), orchestration={"batch_size": BATCH})
    run(ws, ["ingest"])
    return ws


def start(env: dict[str, str], out: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(out, "wb") as sink:
        return subprocess.Popen([sys.executable, "-c", SHIM, *args], cwd=REPO, env=env, stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)



def local_servers(process_tag, parent: int) -> list:
    """The shared local Prefect server (flows.runtime.local_server) that process ``parent`` started."""
    return [p for p in process_tag.tagged() if p.ppid == parent and "-m flows.runtime.local_server" in p.command]


def one_photo_batches(world: Path, root: Path):
    """A workspace ready for `caption --captioner knn-consensus`, one photo per batch (so it takes a while)."""
    ws = make_workspace(root, data=demo_data(world, N_TARGETS), orchestration={"batch_size": 1, "cheap_batch_size": 1},
                        captioners={"enabled": ["knn-consensus"], "knn-consensus": {"batch_size": 1}})
    run(ws, ["ingest", "embed-images", "neighbours"])
    return ws


def knn_captions(ws) -> dict[str, tuple[str, float]]:
    """image id -> (caption, when it was written) of the knn-consensus captioner."""
    rows = ws.store.conn.execute("SELECT image_id, text, created_at FROM captions WHERE captioner='knn-consensus'")
    return {r[0]: (r[1], r[2]) for r in rows}


def latest_stage_run(ws, stage: str) -> dict:
    return ws.store.stage_runs(stage, limit=1)[0]


def flow_run_state(prefect_home: Path, flow_run_id: str) -> str:
    with sqlite3.connect(prefect_home / "prefect.db") as conn:
        row = conn.execute("SELECT state_type FROM flow_run WHERE id=?", (flow_run_id,)).fetchone()
    return row[0] if row else ""


def assert_resumes_with_only_the_missing_batches(ws, kept: dict[str, str]) -> None:
    label = SlowRowsStage.name
    summary = run(ws, [spec(SlowRowsStage)])
    outcome = summary.stage(label)
    assert summary.status == "completed"
    assert outcome.done == N_IMAGES - len(kept)
    assert outcome.ran == (N_IMAGES - len(kept)) // BATCH
    assert outcome.cached + outcome.unchanged == len(kept) // BATCH
    assert sorted(outputs(ws, label)) == ws.store.image_ids()
    assert set(computed(ws, label).values()) == {1}, "no photo was computed twice"


# -- capsearch run --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_ends_a_run_cleanly_and_the_next_run_computes_only_the_rest(
        sig, ingested, process_tag, tmp_path, request):
    """SIGTERM's run starts the home's local Prefect server itself, and nothing of the run outlives it once that
    server is idle; SIGHUP's and SIGINT's find the session's server up, as a user's later commands do."""
    cold = sig == signal.SIGTERM
    env = request.getfixturevalue("command_env" if cold else "warm_command_env")
    home = request.getfixturevalue("prefect_home" if cold else "warm_prefect_home")
    ws, label = ingested, SlowRowsStage.name
    out = tmp_path / "run.log"
    proc = start(env, out, "-w", str(ws.root), "run", "--stage", spec(SlowRowsStage))
    wait_until(lambda: len(outputs(ws, label)) >= 2 * BATCH, "two batches were done", proc=proc, out=out)
    if cold:
        assert local_servers(process_tag, proc.pid), f"no local Prefect server started by capsearch: {process_tag.tagged()}"

    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    log = out.read_text(errors="replace")
    assert code == 128 + sig, log
    assert process_tag.wait_gone(20) == [], "processes of the run outlived it (the local server: its idle time)"
    name = signal.Signals(sig).name
    assert f"{name}: stopping after the batches in flight" in log and f"stopped by {name} (exit code {code})" in log

    kept = outputs(ws, label)
    assert 2 * BATCH <= len(kept) < N_IMAGES and len(kept) % BATCH == 0, "whole batches kept, the rest not started"
    stage_run = latest_stage_run(ws, label)
    assert stage_run.status == "cancelled" and stage_run.done == len(kept)
    assert flow_run_state(home, stage_run.flow_run_id) == "CANCELLED"
    assert_resumes_with_only_the_missing_batches(ws, kept)


def test_a_second_signal_abandons_the_batch_in_flight_and_exits_at_once(ingested, warm_command_env, process_tag,
                                                                        warm_prefect_home, tmp_path):
    ws, label = ingested, StuckRowsStage.name
    out = tmp_path / "run.log"
    proc = start(warm_command_env, out, "-w", str(ws.root), "run", "--stage", spec(StuckRowsStage))
    wait_until(lambda: ws.store.get_meta(StuckRowsStage.started_key) is not None, "a batch started", proc=proc, out=out)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert proc.poll() is None, "the first signal waits for the batch in flight"
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = proc.wait(timeout=30)
    assert code == 128 + signal.SIGTERM and time.monotonic() - t0 < 15, "it did not wait for the 60 s batch"
    assert process_tag.wait_gone(10) == []
    assert "SIGTERM again: stopping now" in out.read_text(errors="replace")
    stage_run = latest_stage_run(ws, label)
    assert stage_run.status == "cancelled" and "abandoned on a second SIGTERM" in stage_run.message
    assert flow_run_state(warm_prefect_home, stage_run.flow_run_id) == "CANCELLED"
    assert outputs(ws, label) == {}, "the abandoned batch wrote nothing"


def test_sigkill_of_a_run_leaves_nothing_once_the_local_server_is_idle(ingested, command_env, process_tag, tmp_path):
    ws, label = ingested, SlowRowsStage.name
    out = tmp_path / "run.log"
    proc = start(command_env, out, "-w", str(ws.root), "run", "--stage", spec(SlowRowsStage))
    wait_until(lambda: len(outputs(ws, label)) >= BATCH, "a batch was done", proc=proc, out=out)
    assert local_servers(process_tag, proc.pid), "the run uses the local Prefect server it started"
    proc.kill()
    proc.wait(timeout=30)
    alive = process_tag.wait_gone(20)
    assert alive == [], f"still running 20 s after SIGKILL of capsearch: {[str(p) for p in alive]}"


@pytest.mark.parametrize("sigterm", [False, True], ids=["server-killed", "server-killed-then-SIGTERM"])
def test_a_run_whose_prefect_server_is_killed_ends_failed_at_once_with_one_line(sigterm, ingested, command_env,
                                                                                process_tag, tmp_path):
    """The out-of-memory killer (here a real SIGKILL) takes the Prefect server mid-run: the run notices within
    seconds and ends failed, saying so once (no Prefect "Error logging to API" lines, no ConnectError); a SIGTERM
    sent meanwhile stops it too; nothing is left running and the rerun computes only the rest."""
    from pipeline.runs import recent_runs

    ws, label = ingested, SlowRowsStage.name
    out = tmp_path / "run.log"
    proc = start(command_env, out, "-w", str(ws.root), "run", "--stage", spec(SlowRowsStage))
    wait_until(lambda: len(outputs(ws, label)) >= BATCH, "a batch was done", proc=proc, out=out)
    [server] = local_servers(process_tag, proc.pid)
    os.kill(server.pid, signal.SIGKILL)
    t0 = time.monotonic()
    if sigterm:
        proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    took = time.monotonic() - t0
    log = out.read_text(errors="replace")
    assert took < 15, f"the run took {took:.0f} s to notice its server's death:\n{log[-3000:]}"
    assert code in ((1, 143) if sigterm else (1,)), log[-3000:]
    said = [line for line in log.splitlines() if "died during the run" in line]
    assert len(said) == 1 and f"pid {server.pid}" in said[0], log[-3000:]
    for noise in ("Error logging to API", "ConnectError", "Traceback"):
        assert noise not in log, log[-3000:]
    [ended] = recent_runs(ws.store, 1)
    assert ended.status == "failed" and "died during the run" in ended.message
    assert latest_stage_run(ws, label).status == "failed"
    assert process_tag.wait_gone(20) == []
    kept = outputs(ws, label)
    assert BATCH <= len(kept) < N_IMAGES and len(kept) % BATCH == 0, "whole batches kept"
    assert_resumes_with_only_the_missing_batches(ws, kept)


def test_sigkill_mid_caption_then_the_rerun_captions_only_the_missing_photos(demo_world, tmp_path, prefect_harness,
                                                                            warm_command_env, process_tag):
    ws = one_photo_batches(demo_world, tmp_path / "ws")
    captions = lambda: knn_captions(ws)  # noqa: E731
    out = tmp_path / "caption.log"
    proc = start(warm_command_env, out, "-w", str(ws.root), "caption", "--captioner", "knn-consensus")
    wait_until(lambda: len(captions()) >= 3, "three photos were captioned", proc=proc, out=out, poll=0.02)
    proc.send_signal(signal.SIGSTOP)     # held at once, so a fast machine cannot finish the stage before the kill
    proc.kill()
    proc.wait(timeout=30)
    assert process_tag.wait_gone(20) == []
    before = captions()
    assert 3 <= len(before) < N_TARGETS, "killed in the middle of the stage"

    summary = run(ws, ["caption"], ["knn-consensus"])
    outcome = summary.stage("caption:knn-consensus")
    assert outcome.done == N_TARGETS - len(before) and outcome.ran == N_TARGETS - len(before)
    after = captions()
    assert sorted(after) == sorted(ws.store.image_ids("target"))
    assert {i: after[i] for i in before} == before, "captions made before the kill were not made again"


def test_the_run_after_a_sigkill_marks_the_killed_runs_flow_runs_crashed_in_prefect(demo_world, tmp_path, prefect_harness,
                                                                                   warm_prefect_home, warm_command_env,
                                                                                   process_tag):
    """A SIGKILLed run cannot tell Prefect it ended: its pipeline and stage flow runs would read Running for good
    in the Prefect UI and the TUI's Runs screen. The next run of the workspace marks them Crashed."""
    from pipeline.runs import recent_runs

    ws = one_photo_batches(demo_world, tmp_path / "ws")
    out = tmp_path / "run.log"
    args = ("-w", str(ws.root), "run", "-s", "caption", "--captioner", "knn-consensus")
    proc = start(warm_command_env, out, *args)
    wait_until(lambda: len(knn_captions(ws)) >= 2, "two photos were captioned", proc=proc, out=out, poll=0.02)
    proc.send_signal(signal.SIGSTOP)
    proc.kill()
    proc.wait(timeout=30)
    assert process_tag.wait_gone(20) == []
    [killed] = recent_runs(ws.store, 1)
    stage = latest_stage_run(ws, "caption")
    assert killed.status == "crashed" and killed.flow_run_id and stage.flow_run_id
    assert flow_run_state(warm_prefect_home, killed.flow_run_id) == "RUNNING"
    assert flow_run_state(warm_prefect_home, stage.flow_run_id) == "RUNNING"

    rerun_log = tmp_path / "rerun.log"
    rerun = start(warm_command_env, rerun_log, *args)
    assert rerun.wait(timeout=300) == 0, rerun_log.read_text()[-3000:]
    assert flow_run_state(warm_prefect_home, killed.flow_run_id) == "CRASHED"
    assert flow_run_state(warm_prefect_home, stage.flow_run_id) == "CRASHED"
    again = recent_runs(ws.store, 1)[0]
    assert again.id != killed.id and again.status == "completed"
    assert flow_run_state(warm_prefect_home, again.flow_run_id) == "COMPLETED"


# -- capsearch tui --------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_closing_the_tmux_session_closes_the_tui_and_leaves_its_run_going(demo_world, tmp_path, prefect_harness,
                                                                          command_env, process_tag):
    """`tmux kill-session` (a dropped SSH session) sends SIGHUP: the TUI exits and nothing of it is left; the run
    it started goes on in the background (issue 13), stops cleanly when cancelled, and the local Prefect server
    it started stops once idle."""
    from flows.runtime.control import cancel_run, wait_for_end
    from pipeline.runs import current_run, get_run

    ws = one_photo_batches(demo_world, tmp_path / "ws")
    running = None
    tag_env = " ".join(f"{k}={v}" for k, v in command_env.items()
                       if k in ("PREFECT_HOME", "PYTHONPATH", "CAPSEARCH_FLOW_THREADS", "CAPSEARCH_TEST_PROCESS_TAG"))
    sock = f"capsearch-signals-{os.getpid()}"
    tm = lambda *a: subprocess.run(["tmux", "-L", sock, *a], capture_output=True, text=True, timeout=30)  # noqa: E731
    pane = lambda: tm("capture-pane", "-p", "-t", "tui").stdout  # noqa: E731
    env = without_prefect(os.environ)
    subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", "new-session", "-d", "-s", "tui", "-x", "100", "-y", "30",
                    f"cd '{REPO}' && env {tag_env} '{sys.executable}' -c \"{SHIM}\" -w '{ws.root}' tui"],
                   env=env, check=True, timeout=30)
    try:
        wait_until(lambda: "caption:knn-consensus" in pane(), "the pipeline screen", 90, show=pane)
        for _ in range(4):
            tm("send-keys", "-t", "tui", "Down")
            time.sleep(0.2)
        tm("send-keys", "-t", "tui", "r")
        wait_until(lambda: "run: caption for knn-consensus" in pane(), "the caption run to start", 30, show=pane)
        wait_until(lambda: len(knn_captions(ws)) >= 2, "two photos captioned", 180, show=pane)
        [tui] = [p for p in process_tag.tagged() if p.command.endswith(" tui")]
        running = current_run(ws.store)
        assert running is not None and running.pid != tui.pid, "the run is a process of its own"
        assert local_servers(process_tag, running.pid), "the run started the local Prefect server"
        assert not local_servers(process_tag, tui.pid), "the TUI runs no flow itself"
        # Hold the run where it is while the session goes, so that on a fast machine it cannot finish all its
        # photos before the test gets to cancel it (a stopped process keeps any hang-up for when it goes on).
        os.kill(running.pid, signal.SIGSTOP)
        tm("kill-session", "-t", "tui")
        wait_until(lambda: all(p.pid != tui.pid for p in process_tag.tagged()), "the TUI to exit", 60)
    finally:
        tm("kill-server")
        if running is not None:
            os.kill(running.pid, signal.SIGCONT)
    captioned = len(knn_captions(ws))
    assert captioned < N_TARGETS
    # A run the hang-up reached would stop after its batch in flight (one photo): two more show it goes on.
    wait_until(lambda: len(knn_captions(ws)) > captioned + 1, "the run to go on captioning after the hang-up", 60,
               poll=0.02)
    os.kill(running.pid, signal.SIGSTOP)
    try:
        after_hangup = get_run(ws.store, running.id)
        assert after_hangup.status == "running", f"the TUI's hang-up stopped its run: {after_hangup}"
        assert len(knn_captions(ws)) < N_TARGETS
        cancel_run(ws)                 # (or let it finish: tests/test_detached_runs.py does)
    finally:
        os.kill(running.pid, signal.SIGCONT)
    assert wait_for_end(ws, running.id, timeout=120).status == "cancelled"
    assert latest_stage_run(ws, "caption").status == "cancelled"
    alive = process_tag.wait_gone(30)
    assert alive == [], f"left after the run stopped: {[str(p) for p in alive]}"
    before = knn_captions(ws)
    outcome = run(ws, ["caption"], ["knn-consensus"]).stage("caption:knn-consensus")
    assert outcome.done == N_TARGETS - len(before), "the next run computes only what is missing"


# -- capsearch server -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: signal.Signals(s).name)
def test_stopping_capsearch_server_stops_prefect_server(sig, command_env, process_tag, prefect_home, tmp_path):
    from flows.runtime.server import free_port

    port = free_port()
    out = tmp_path / "server.log"
    proc = start(command_env, out, "server", "--port", str(port))
    wait_until(lambda: "Prefect UI:" in out.read_text(errors="replace"), "the server to answer", proc=proc, out=out)
    children = [p for p in process_tag.tagged() if p.ppid == proc.pid]
    assert any("prefect server start" in p.command for p in children), children
    record = prefect_home / "capsearch-server.json"
    assert record.exists()

    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    alive = process_tag.wait_gone(15)
    assert alive == [], f"left after {signal.Signals(sig).name}: {[str(p) for p in alive]}"
    if sig != signal.SIGKILL:
        assert code == 128 + sig
        assert not record.exists(), "the server record is removed with the server"


def test_sigterm_stops_capsearch_serve_and_the_server_it_started(ingested, command_env, process_tag, tmp_path):
    out = tmp_path / "serve.log"
    proc = start(command_env, out, "-w", str(ingested.root), "serve")
    wait_until(lambda: "serving; Ctrl-C stops" in out.read_text(errors="replace"), "serve to be serving", 240,
               proc=proc, out=out)
    assert any("prefect server start" in p.command for p in process_tag.tagged() if p.ppid == proc.pid)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=90)
    log = out.read_text(errors="replace")
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM" in log, log
    assert "stopped serving" in log, "the runner stopped, then the command went on to stop the server"
    alive = process_tag.wait_gone(15)
    assert alive == [], f"left after SIGTERM: {[str(p) for p in alive]}"
