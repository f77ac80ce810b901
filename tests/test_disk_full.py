"""A full disk, without root: the child process runs under a file size limit (RLIMIT_FSIZE, with SIGXFSZ
ignored, so a write past it fails with EFBIG as on a full disk). The error names the disk and the file,
no temporary file is left, no photo is marked failed, and once there is room the rerun completes and
ends like a run that never ran out of space."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flows.api import run
from pipeline.datasets.demo import generate_demo_world
from pipeline.stages.run import run_stage
from pipeline.stages.registry import pipeline_stages
from pipeline.workspace import Workspace
from tests.fixtures.store_content import diff_content, diff_searches, search_results, store_content
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.commands import capsearch_child

pytestmark = pytest.mark.slow   # a whole run filling the disk takes 40 s or more

N_IMAGES, N_TARGETS = 48, 24
# Runs the rest of its arguments as a program whose files may not grow past argv[1] bytes.
LIMITED = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
           "limit = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
           "os.execv(sys.argv[2], sys.argv[2:])")


def limited(nbytes: int) -> list[str]:
    return [sys.executable, "-c", LIMITED, str(nbytes)]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("disk-world") / "demo"
    generate_demo_world(root, n_images=N_IMAGES, seed=3)
    return root


def settings(world: Path) -> dict:
    return {"data": {"source": "demo", "path": str(world), "demo_images": N_IMAGES, "n_targets": N_TARGETS},
            "orchestration": {"batch_size": 8, "cheap_batch_size": 8},
            "image_embedder": {"num_workers": 0}, "evaluate": {"n_boot": 100}}


def workspace_through(root: Path, world: Path, last: str | None) -> Workspace:
    """A workspace whose stages up to ``last`` ran (in this process), its WAL checkpointed into the database."""
    ws = make_workspace(root, **settings(world))
    stages = pipeline_stages(ws)
    for stage in stages[: [s.name for s in stages].index(last) + 1] if last else []:
        run_stage(stage)
    ws.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Workspace(root)


@pytest.fixture(scope="module")
def clean(world, tmp_path_factory):
    ws = workspace_through(tmp_path_factory.mktemp("clean") / "ws", world, "report")
    return store_content(ws), search_results(ws)


def assert_nothing_blamed_on_the_photos(ws: Workspace) -> None:
    store = Workspace(ws.root).store
    failed_captions = store.conn.execute("SELECT COUNT(*) FROM captions WHERE status != 'ok'").fetchone()[0]
    assert failed_captions == 0, "a disk error was recorded as a caption failure"
    bad = [p for p in store.problems() if p.severity in ("failed", "skipped")]
    assert bad == [], bad
    assert list(ws.root.rglob("*.tmp")) == [], "a temporary file was left behind"


def test_a_run_that_fills_the_disk_names_it_and_the_rerun_completes(world, clean, tmp_path, prefect_harness):
    ws = workspace_through(tmp_path / "ws", world, "ingest")
    size = ws.db_path.stat().st_size
    out = capsearch_child(ws, "run", launcher=limited(size + 300_000), env={"PREFECT_HOME": str(tmp_path / "ph")})
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "disk full writing" in out.stderr and "free space and run again" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert_nothing_blamed_on_the_photos(ws)

    ws = Workspace(ws.root)
    assert run(ws).status == "completed"
    expected_store, expected_searches = clean
    assert diff_content(store_content(ws), expected_store) == []
    assert diff_searches(search_results(ws), expected_searches) == []


def test_a_caption_batch_whose_store_write_fails_is_not_recorded_as_failed_photos(world, tmp_path, prefect_harness):
    """kNN consensus writes text vectors while captioning: a full disk there fails the batch, it does not
    become 'failed: database or disk is full' on each photo (which a later run would skip)."""
    ws = workspace_through(tmp_path / "ws", world, "prompts")
    out = capsearch_child(ws, "run", "--stage", "caption", launcher=limited(40_000),
                          env={"PREFECT_HOME": str(tmp_path / "ph")})
    assert out.returncode == 1 and "disk full writing" in out.stderr, out.stderr[-2000:]
    assert_nothing_blamed_on_the_photos(ws)
    ws = Workspace(ws.root)
    assert ws.store.conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0] == 0
    caption = next(s for s in pipeline_stages(ws) if s.name == "caption")
    assert caption.counts().missing == N_TARGETS        # all retried by the next run, not settled as failed
    assert run(ws, ["caption"]).status == "completed"
    assert caption.counts().done == N_TARGETS


def test_search_that_cannot_write_its_snapshot_names_the_file(world, clean, tmp_path):
    ws = workspace_through(tmp_path / "ws", world, "embed-captions")
    for path in ws.store.arrays_dir.iterdir():
        path.unlink()                                  # search must write the snapshots again
    out = capsearch_child(ws, "search", "a dog", launcher=limited(100_000))
    assert out.returncode == 1
    assert "disk full writing" in out.stderr and str(ws.store.arrays_dir) in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert list(ws.store.arrays_dir.iterdir()) == [], "no temporary or partial file is left"
    ok = capsearch_child(ws, "search", "a dog", "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]
