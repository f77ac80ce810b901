"""One run per workspace: the run lock, the run's record, its live progress, and who may be signalled.

Real processes throughout: `capsearch run` twice at once on one workspace, `--wait`, a run killed with
SIGKILL (its lock goes with it), a lock held by another process, a pid reused by a stranger.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from flows.api import run
from pipeline.live_progress import ProgressRecorder
from pipeline.progress import StageProgress
from pipeline.run_lock import RunLock, WorkspaceBusy
from pipeline.run_owner import current_owner, process_start, signal_owner
from pipeline.runs import (current_run, finish_run, get_run, recent_runs, recorded_outcome, run_log, run_progress,
                           start_run)
from pipeline.states import Status
from tests.fixtures.commands import REPO, run_command, start_command, wait_until
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.flow_stages import N_IMAGES, PacedRowsStage, computed, demo_data, outputs, spec

BATCH = 8
HOLD = ("import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")


# -- the lock --------------------------------------------------------------------------------------------------
def test_the_run_lock_excludes_a_second_holder_and_dies_with_its_process(tmp_path):
    lock = RunLock(tmp_path)
    assert lock.try_acquire({"what": "first"})
    assert json.loads(lock.path.read_text())["owner"] == json.loads(current_owner())
    other = RunLock(tmp_path)
    assert not other.try_acquire(), "a second lock on the same workspace, even in the same process"
    with pytest.raises(WorkspaceBusy, match="another run is going on") as err:
        other.acquire(describe=lambda: "the first run")
    assert "the first run" in str(err.value) and "--wait" in str(err.value)
    lock.release()
    assert other.try_acquire()
    other.release()

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not lock.try_acquire(), "another process holds it"
        holder.kill()                 # SIGKILL: nothing runs to release it
        holder.wait(timeout=30)
        assert lock.try_acquire(), "the kernel released the lock of the killed process"
        lock.release()
    finally:
        holder.kill()
        holder.wait()


# Takes the lock the way a run does, but says who it is only after argv[2] seconds (a run in its first instant,
# before it has written the lock file or its record), or never (argv[2] < 0).
HOLD_THEN_SAY = ("import fcntl, json, os, sys, time\n"
                 "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
                 "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                 "print('held', flush=True)\n"
                 "if float(sys.argv[2]) >= 0:\n"
                 "    time.sleep(float(sys.argv[2]))\n"
                 "    from pipeline.run_owner import current_owner\n"
                 "    said = json.dumps({'owner': json.loads(current_owner()), 'since': time.time(), "
                 "'what': 'every stage', 'started_by': 'ann with `capsearch run`'}).encode()\n"
                 "    os.pwrite(fd, said, 0)\n"
                 "    os.ftruncate(fd, len(said))\n"
                 "time.sleep(600)\n")


@pytest.mark.parametrize("says_after", [1.0, -1])
def test_a_run_refused_in_the_winners_first_instant_names_the_winner(tmp_path, says_after):
    """Two runs started in the same instant: the loser looks before the winner has said who it is. It waits a
    moment for the winner's word (its pid, who started it, what it runs); a holder that never says is named
    by the kernel's list of locks (pid and command line)."""
    (tmp_path / "ws").mkdir()
    path = RunLock(tmp_path / "ws").path
    path.write_text(json.dumps({"owner": {"host": json.loads(current_owner())["host"], "pid": 999_999_999,
                                          "start": "1"}, "since": 1.0, "what": "a run long gone"}))
    winner = subprocess.Popen([sys.executable, "-c", HOLD_THEN_SAY, str(path), str(says_after)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert winner.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceBusy) as err:
            RunLock(tmp_path / "ws").acquire()
        message = str(err.value)
        assert f"pid {winner.pid}" in message and "a run long gone" not in message, message
        if says_after >= 0:
            assert "every stage, started by ann with `capsearch run`" in message, message
        else:
            assert "`" in message and "import fcntl, json, os, sys, time fd = os.open" in message, message
    finally:
        winner.kill()
        winner.wait()


def test_waiting_for_the_lock_gives_up_when_cancelled(tmp_path):
    import threading

    from pipeline.run_lock import WaitCancelled

    first = RunLock(tmp_path)
    first.acquire()
    cancel = threading.Event()
    waited: list[str] = []
    threading.Timer(0.6, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(WaitCancelled):
        RunLock(tmp_path).acquire(wait=True, describe=lambda: "the first", on_wait=waited.append, cancel=cancel, poll=0.1)
    assert waited == ["the first"] and 0.5 < time.monotonic() - t0 < 5
    first.release()


# -- progress in the store ---------------------------------------------------------------------------------------
def test_progress_is_written_at_a_bounded_rate_and_the_last_state_is_kept(workspace_factory):
    ws = workspace_factory()
    store = ws.store
    run_id = start_run(store, "a test run", "the test")
    recorder = ProgressRecorder(store, run_id, interval=0.2)
    sp = StageProgress("stage-a", 5000, recorder)
    t0 = time.monotonic()
    mid = []
    for i in range(5000):
        sp.advance(1, failures=1 if i % 1000 == 0 else 0)
        if i % 700 == 0:
            sp.message(f"note {i}", "warning")
        if i % 50 == 0:
            time.sleep(0.01)              # about a second of work
        if i == 2500:
            time.sleep(0.5)
            mid = run_progress(store, run_id)    # what another process sees while the stage runs
    seconds = time.monotonic() - t0
    sp.finish("stage-a: all done")
    StageProgress("stage-b", 3, recorder).finish()
    recorder.close()
    finish_run(store, run_id, Status.COMPLETED)

    # 5000 advances, 8 messages, 3 starts and finishes: a handful of writes per second, not one per event
    assert recorder.writes <= seconds / 0.2 + 8, (recorder.writes, seconds)
    assert mid[0].stage == "stage-a" and mid[0].state is Status.RUNNING and 2000 < mid[0].done <= 2501
    rows = {s.stage: s for s in run_progress(store, run_id)}
    a = rows["stage-a"]
    assert (a.state, a.done, a.total, a.failures, a.message) == (Status.COMPLETED, 5000, 5000, 5, "stage-a: all done")
    assert rows["stage-b"].state is Status.COMPLETED and rows["stage-b"].position == 1
    assert [line.text for line in run_log(store, run_id)] == [f"note {i}" for i in range(0, 5000, 700)]
    assert get_run(store, run_id).status is Status.COMPLETED and current_run(store) is None


def test_progress_rows_an_earlier_capsearch_wrote_read_in_the_one_vocabulary(workspace_factory):
    """``run_progress`` rows written as ``finished`` and ``not-applicable`` (before ``pipeline.states``) read as
    completed and not applicable, in the live progress and in the outcome rebuilt from the record."""
    ws = workspace_factory()
    store = ws.store
    run_id = start_run(store, "a run of an earlier capsearch", "the test")
    with store.transaction() as c:
        c.executemany("INSERT INTO run_progress(run_id, stage, position, state, done, total, failures, batches_done, "
                      "batches, rate, message, level, started_at, updated_at, tokens) "
                      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      [(run_id, "ingest", 0, "finished", 4, 4, 0, 1, 1, None, None, None, 1.0, 2.0, 0),
                       (run_id, "queries", 1, "not-applicable", 0, 0, 0, 0, 0, None, "no held-out captions", None, 2.0,
                        2.0, 0)])
    finish_run(store, run_id, Status.COMPLETED)
    ingest, queries = run_progress(store, run_id)
    assert (ingest.state, queries.state) == (Status.COMPLETED, Status.NOT_APPLICABLE) and ingest.ended
    assert queries.describe() == "queries not applicable: no held-out captions"
    outcome = recorded_outcome(store, get_run(store, run_id))
    assert [(s.stage, s.status, s.reason) for s in outcome.stages] == [
        ("ingest", "completed", ""), ("queries", "not applicable", "no held-out captions")]
    with pytest.raises(ValueError, match="not how a run ends"):
        finish_run(store, run_id, Status.NOT_APPLICABLE)


def test_a_progress_write_never_waits_for_a_batch_holding_the_store(workspace_factory):
    """A stage reports progress inside its own write transaction: the event must return at once."""
    ws = workspace_factory()
    store = ws.store
    run_id = start_run(store, "a test run", "the test")
    recorder = ProgressRecorder(store, run_id, interval=0.05)
    with store.transaction():
        t0 = time.monotonic()
        sp = StageProgress("stage-a", 10, recorder)
        sp.advance(10)
        sp.finish()
        assert time.monotonic() - t0 < 0.5
        time.sleep(0.3)                   # the writer waits for the lock meanwhile
    recorder.close()
    assert run_progress(store, run_id)[0].done == 10


def test_the_events_of_a_run_ending_while_a_progress_write_waits_for_the_store_are_written(workspace_factory):
    """The run ends (``close``) while the writer is inside a write that waits for the store's lock: the events the
    stages reported meanwhile (the stage's finish) are written before the writer stops, not dropped."""
    ws = workspace_factory()
    store = ws.store
    run_id = start_run(store, "a test run", "the test")
    recorder = ProgressRecorder(store, run_id, interval=0.05)
    closer = threading.Thread(target=recorder.close)
    with store.transaction():             # another connection holds the write lock: the writer's write waits
        sp = StageProgress("stage-a", 10, recorder)
        sp.advance(4)
        time.sleep(0.5)                   # the writer has taken the start and is waiting for the lock
        sp.advance(6)
        sp.finish("stage-a: all done")
        closer.start()                    # the run ends now
        time.sleep(0.3)
    closer.join(timeout=60)
    assert not closer.is_alive()
    [a] = run_progress(store, run_id)
    assert (a.state, a.done, a.total, a.message) == (Status.COMPLETED, 10, 10, "stage-a: all done")


# -- whom a cancel may signal ------------------------------------------------------------------------------------
def test_a_recorded_owner_is_signalled_only_while_it_is_that_very_process():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        real = json.dumps({"host": json.loads(current_owner())["host"], "pid": sleeper.pid,
                           "start": process_start(sleeper.pid)})
        reused = json.dumps({**json.loads(real), "start": str(int(process_start(sleeper.pid)) - 100)})
        elsewhere = json.dumps({**json.loads(real), "host": "another-host"})
        assert not signal_owner(reused, signal.SIGTERM), "the pid belongs to another process now"
        assert not signal_owner(elsewhere, signal.SIGTERM)
        time.sleep(0.2)
        assert sleeper.poll() is None
        assert signal_owner(real, signal.SIGTERM)
        assert sleeper.wait(timeout=30) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


# -- two runs on one workspace, for real -----------------------------------------------------------------------
@pytest.fixture
def paced(demo_world, tmp_path, prefect_harness):
    ws = make_workspace(tmp_path / "ws", data=demo_data(demo_world), orchestration={"batch_size": BATCH})
    run(ws, ["ingest"])
    return ws


def _ids(text: str) -> set[int]:
    return {int(p) for p in re.findall(r"pid (\d+)", text)}


@pytest.mark.slow
def test_two_runs_at_once_one_runs_and_the_other_refuses_naming_it(paced, warm_shell_env, tmp_path):
    ws, label = paced, PacedRowsStage.name
    env = {**warm_shell_env, "CAPSEARCH_TEST_BATCH_SECONDS": "0.8"}
    args = ("-w", str(ws.root), "run", "--stage", spec(PacedRowsStage))
    procs = [start_command(env, tmp_path / f"run{i}.log", *args) for i in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"run{i}.log").read_text(errors="replace") for i in range(2)]
    assert sorted(codes) == [0, 1], logs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert "another run is going on" in logs[loser] and procs[winner].pid in _ids(logs[loser]), logs[loser]
    assert "--wait" in logs[loser]
    assert set(computed(ws, label).values()) == {1} and len(outputs(ws, label)) == N_IMAGES, "one run did the work"
    runs = recent_runs(ws.store)
    assert [r.status for r in runs[:1]] == ["completed"] and runs[0].pid == procs[winner].pid

    # refused later in a run: who started it, since when and how far it got
    env["CAPSEARCH_TEST_BATCH_SECONDS"] = "1.5"
    with ws.store.transaction() as c:
        c.execute("DELETE FROM flowtest_outputs")
    first = start_command(env, tmp_path / "first.log", *args)
    wait_until(lambda: len(outputs(ws, label)) >= BATCH, "a batch was done", proc=first, out=tmp_path / "first.log")
    second = run_command(env, *args)
    assert second.returncode == 1
    message = " ".join(second.stdout.split() + second.stderr.split())
    assert f"pid {first.pid}" in message and "started by" in message and "ago" in message, message
    assert re.search(rf"at {label} \d+ of {N_IMAGES}", message), message
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 128 + signal.SIGTERM
    status = run_command(env, "-w", str(ws.root), "status")     # plain status says how the last run ended
    text = " ".join(status.stdout.split())
    assert status.returncode == 0 and "last run cancelled at" in text and f"pid {first.pid}" in text, text
    assert re.search(rf"got as far as {label} \d+ of {N_IMAGES}", text) and "finished batches are kept" in text, text


@pytest.mark.slow
def test_a_deleted_lock_file_does_not_let_a_second_run_start(paced, warm_shell_env, tmp_path):
    """The lock's truth is the running process: with `run.lock` deleted under a run, a second run still refuses,
    naming the first, and only the first computes."""
    ws, label = paced, PacedRowsStage.name
    pace = tmp_path / "pace"
    pace.write_text("6.0")               # 6 s a batch until the second run has been refused: it starts well before
    env = {**warm_shell_env, "CAPSEARCH_TEST_PACE_FILE": str(pace)}
    args = ("-w", str(ws.root), "run", "--stage", spec(PacedRowsStage))
    first = start_command(env, tmp_path / "first.log", *args)
    wait_until(lambda: len(outputs(ws, label)) >= BATCH, "a batch was done", proc=first, out=tmp_path / "first.log")
    (ws.root / "run.lock").unlink()
    second = run_command(env, *args)
    message = " ".join(second.stdout.split() + second.stderr.split())
    assert second.returncode == 1 and "another run is going on" in message, message
    assert f"pid {first.pid}" in message and "started by" in message, message
    assert first.poll() is None, "the first run ended before the second was refused: the test raced nothing"
    pace.write_text("0")                 # the rest of the first run at once
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()
    assert set(computed(ws, label).values()) == {1} and len(outputs(ws, label)) == N_IMAGES, "one run did the work"
    assert [r.pid for r in recent_runs(ws.store)[:1]] == [first.pid]


@pytest.mark.slow
def test_with_wait_the_second_run_waits_its_turn(paced, warm_shell_env, tmp_path):
    ws, label = paced, PacedRowsStage.name
    env = {**warm_shell_env, "CAPSEARCH_TEST_BATCH_SECONDS": "0.8"}
    args = ("-w", str(ws.root), "run", "--stage", spec(PacedRowsStage))
    first = start_command(env, tmp_path / "first.log", *args)
    wait_until(lambda: current_run(ws.store) is not None, "the first run claimed the workspace", proc=first,
               out=tmp_path / "first.log")
    second = start_command(env, tmp_path / "second.log", *args, "--wait")
    wait_until(lambda: "waiting for it to end" in (tmp_path / "second.log").read_text(errors="replace"),
               "the second run to wait", proc=second, out=tmp_path / "second.log")
    assert first.wait(timeout=300) == 0
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()
    a, b = sorted(recent_runs(ws.store)[:2], key=lambda r: r.id)
    assert (a.pid, b.pid) == (first.pid, second.pid)
    assert a.status == b.status == "completed" and b.started_at >= a.finished_at
    assert set(computed(ws, label).values()) == {1}, "the second run found everything done"


@pytest.mark.slow
def test_the_lock_of_a_killed_run_does_not_block_the_next(paced, warm_shell_env, tmp_path):
    ws, label = paced, PacedRowsStage.name
    env = {**warm_shell_env, "CAPSEARCH_TEST_BATCH_SECONDS": "0.8"}
    args = ("-w", str(ws.root), "run", "--stage", spec(PacedRowsStage))
    killed = start_command(env, tmp_path / "killed.log", *args)
    wait_until(lambda: len(outputs(ws, label)) >= BATCH, "a batch was done", proc=killed, out=tmp_path / "killed.log")
    killed.kill()
    killed.wait(timeout=30)
    kept = len(outputs(ws, label))
    status = run_command(env, "-w", str(ws.root), "status")     # plain status says the last run crashed, when, how far
    text = " ".join(status.stdout.split())
    assert status.returncode == 0 and "last run crashed at" in text and f"pid {killed.pid}" in text, text
    assert re.search(rf"got as far as {label} \d+ of {N_IMAGES}", text), text
    assert "ended without recording the end" in text, text
    again = run_command(env, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    dead, done = sorted(recent_runs(ws.store)[:2], key=lambda r: r.id)
    assert dead.pid == killed.pid and dead.status == "crashed" and "ended without finishing" in dead.message
    assert done.status == "completed"
    assert BATCH <= kept < N_IMAGES and len(outputs(ws, label)) == N_IMAGES
    assert set(computed(ws, label).values()) == {1}, "the next run computed only what the killed one had not"
    assert [s.stage for s in run_progress(ws.store, dead.id)] == [label]
