"""A full disk, without root: the child process runs under a file size limit (RLIMIT_FSIZE, with SIGXFSZ
ignored, so a write past it fails with EFBIG as on a full disk), or, where unprivileged user namespaces
allow it (``unshare -Urm``), on a real file system that fills up: a small tmpfs mounted over a copy of the
workspace. The error names the disk and the file, no temporary file is left, no photo is marked failed,
and once there is room the rerun completes and ends like a run that never ran out of space."""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
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
from tests.fixtures.commands import REPO, capsearch_child

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


# Runs `python -m capsearch -w <tmpfs>/ws ARGS` on a tmpfs of $1 KiB holding a copy of the workspace $2, in a
# user and mount namespace of its own (no root needed), then copies the workspace out to $3 (the tmpfs goes with
# the namespace). The command's exit code is the script's.
ON_A_SMALL_DISK = (
    'set -e; mnt="$(mktemp -d)"; mount -t tmpfs -o "size=$1k" tmpfs "$mnt"; cp -a "$2" "$mnt/ws"; '
    'set +e; "$4" -m capsearch -w "$mnt/ws" "${@:5}"; code=$?; cp -a "$mnt/ws" "$3"; exit $code')


def small_disks() -> str | None:
    """Why a test cannot mount a small file system of its own here, or None when it can."""
    if shutil.which("unshare") is None:
        return "no `unshare` (util-linux)"
    probe = subprocess.run(["unshare", "-Urm", "bash", "-c", 'd="$(mktemp -d)"; mount -t tmpfs -o size=64k tmpfs "$d"'],
                           capture_output=True, text=True, timeout=60)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


def test_a_full_disk_stops_the_run_at_once_with_one_line_and_records_why(world, clean, tmp_path, prefect_harness):
    """A real full disk (a tmpfs that fills up) during captioning: one line naming the file, the workspace and the
    disk, not a warning per photo; the stage run and the run are recorded as stopped by it before the process
    ends (not left `running` for a later run to find); the rerun with room ends like a clean run."""
    why = small_disks()
    if why:
        pytest.skip(why)
    from prefect.settings import PREFECT_API_URL

    ws = workspace_through(tmp_path / "ws", world, "prompts")
    used = sum(p.stat().st_size for p in ws.root.rglob("*") if p.is_file()) // 1024
    after = tmp_path / "after"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_CRASH")},
           "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    # room for the run's own records, not for the captions (the caption stage writes about 550 KB here)
    out = subprocess.run(["unshare", "-Urm", "bash", "-c", ON_A_SMALL_DISK, "sh", str(used + 240), str(ws.root),
                          str(after), sys.executable, "run", "--stage", "caption"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    said = [line for line in text.splitlines() if "disk full" in line or "DiskFull" in line]
    assert len(said) == 1, f"the full disk was reported {len(said)} times:\n" + "\n".join(said[:10])
    assert said[0].startswith("error: disk full writing ") and "free space and run again" in said[0], said[0]
    assert re.search(r"disk full writing (/\S+)/ws/capsearch\.db \(workspace \1/ws; ", said[0]), said[0]
    assert "the disk tmpfs mounted at " in said[0] and "B free of " in said[0], said[0]
    assert "Traceback" not in text

    db = sqlite3.connect(after / "capsearch.db")      # as recorded (not as read: a dead run reads `crashed`)
    recorded = db.execute("SELECT stage, status, message FROM stage_runs ORDER BY id DESC").fetchall()
    stage, stage_status, message = recorded[0]
    assert (stage, stage_status) == ("caption", "failed") and message.startswith("stopped by a full disk"), (
        recorded, text[-3000:])
    assert db.execute("SELECT status FROM runs ORDER BY id DESC LIMIT 1").fetchone() == ("failed",)
    assert db.execute("SELECT COUNT(*) FROM stage_runs WHERE status = 'running'").fetchone() == (0,)
    db.close()
    assert_nothing_blamed_on_the_photos(Workspace(after))

    ws = Workspace(after)
    assert run(ws).status == "completed"
    expected_store, expected_searches = clean
    assert diff_content(store_content(ws), expected_store) == []
    assert diff_searches(search_results(ws), expected_searches) == []


def test_a_full_disk_on_a_run_settled_before_prefect_is_said_once_and_recorded(world, clean, tmp_path):
    """Every stage done, the snapshots gone, a disk with no room for them: the run has nothing to compute and
    settles its stages without Prefect, and rewriting the first snapshot fills the disk. One line names the
    file, the workspace and the disk; the stage run and the run are recorded as stopped by it (not `running`);
    no Prefect run is made; with room again, the rerun ends like a clean run."""
    why = small_disks()
    if why:
        pytest.skip(why)
    ws = workspace_through(tmp_path / "ws", world, "report")
    shutil.rmtree(ws.store.arrays_dir)
    used = sum(p.stat().st_size for p in ws.root.rglob("*") if p.is_file()) // 1024
    before, after = tmp_path / "before", ws.root       # back where it was: the report's recorded paths hold
    ws.root.rename(before)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CAPSEARCH_CRASH", "PREFECT_API_URL"))},
           "PREFECT_HOME": str(tmp_path / "ph"), "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    # room for the run's own records (the WAL), not for the image snapshot (270 KB here)
    out = subprocess.run(["unshare", "-Urm", "bash", "-c", ON_A_SMALL_DISK, "sh", str(used + 200), str(before),
                          str(after), sys.executable, "run"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    said = [line for line in text.splitlines() if "disk full" in line or "DiskFull" in line]
    assert len(said) == 1, f"the full disk was reported {len(said)} times:\n" + "\n".join(said[:10])
    assert re.search(r"^error: disk full writing (/\S+)/ws/arrays/\S+ \(workspace \1/ws; the disk tmpfs mounted at ",
                     said[0]) and "free space and run again" in said[0], said[0]
    assert "Traceback" not in text

    db = sqlite3.connect(after / "capsearch.db")
    stage, stage_status, message = db.execute("SELECT stage, status, message FROM stage_runs ORDER BY id DESC").fetchone()
    assert stage_status == "failed" and message.startswith("stopped by a full disk after "), (stage, message)
    assert db.execute("SELECT status, flow_run_id FROM runs ORDER BY id DESC LIMIT 1").fetchone() == ("failed", None)
    assert db.execute("SELECT COUNT(*) FROM stage_runs WHERE status = 'running'").fetchone() == (0,)
    db.close()
    assert not (tmp_path / "ph").exists(), "a run with nothing to compute started Prefect"
    assert_nothing_blamed_on_the_photos(Workspace(after))
    status = subprocess.run([sys.executable, "-m", "capsearch", "-w", str(after), "status"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)   # plain status says how the last run ended
    said = " ".join(status.stdout.split())
    assert status.returncode == 0 and "last run failed at" in said and "got as far as embed-images" in said, said
    assert "disk full writing " in said and "free space and run again" in said, said

    ws = Workspace(after)
    assert run(ws).status == "completed"
    expected_store, expected_searches = clean
    assert diff_content(store_content(ws), expected_store) == []
    assert diff_searches(search_results(ws), expected_searches) == []
