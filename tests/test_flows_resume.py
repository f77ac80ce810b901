"""Resume after a crash: a run killed with SIGKILL in the middle of a stage loses at most the batches in flight."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flows.api import run
from pipeline.stages.registry import build_stage
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.flow_stages import N_IMAGES, SlowRowsStage, computed, demo_data, outputs, spec

REPO = Path(__file__).resolve().parents[1]
BATCH = 8

CHILD = textwrap.dedent("""
    import sys
    from flows.api import run
    from pipeline.workspace import Workspace
    run(Workspace(sys.argv[1]), [sys.argv[2]])
""")


@pytest.fixture
def ingested(demo_world, tmp_path, prefect_harness):
    ws = make_workspace(tmp_path / "ws", data=demo_data(demo_world), orchestration={"batch_size": BATCH})
    run(ws, ["ingest"])
    return ws


def test_killed_run_resumes_with_only_the_missing_batches(ingested):
    from prefect.settings import PREFECT_API_URL

    ws = ingested
    stage_spec = spec(SlowRowsStage)
    label = SlowRowsStage.name
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ws.root), stage_spec], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(outputs(ws, label)) < 3 * BATCH:
            assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    done_at_kill = set(outputs(ws, label))
    stage = build_stage(ws, stage_spec)
    batches = stage.plan()
    assert len(batches) == N_IMAGES // BATCH
    complete = [b for b in batches if set(b.ids) <= done_at_kill]
    partial = [b for b in batches if set(b.ids) & done_at_kill and not set(b.ids) <= done_at_kill]
    assert 3 <= len(complete) < len(batches) and not partial, "a batch is written all at once or not at all"

    summary = run(ws, [stage_spec])
    outcome = summary.stage(label)
    assert outcome.ran == len(batches) - len(complete)
    assert outcome.cached + outcome.unchanged == len(complete)
    assert outcome.done == N_IMAGES - len(done_at_kill)
    assert sorted(outputs(ws, label)) == ws.store.image_ids()
    assert set(computed(ws, label).values()) == {1}, "no photo was computed twice"
