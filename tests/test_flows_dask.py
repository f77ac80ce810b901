"""Scale-out on Dask: the same store contents as the default thread runner, work done in worker processes."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from flows.api import run
from flows.runners import cluster_spec
from pipeline.workspace import Workspace
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.flow_stages import N_IMAGES, GpuRowsStage, demo_data, log_rows, outputs, spec

pytestmark = pytest.mark.slow

STAGES = ["ingest", "embed-images", "neighbours", "prompts", "caption", "embed-captions", "queries", "evaluate"]


@pytest.fixture(scope="module")
def two_workers():
    from distributed import LocalCluster

    # An existing cluster as a user starts one: Dask's defaults (spawned, daemonic worker processes).
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                           silence_logs=logging.ERROR)
    try:
        yield cluster
    finally:
        cluster.close()


def snapshot(ws: Workspace) -> dict[str, object]:
    """Everything the stages wrote, without timestamps or run bookkeeping."""
    conn = ws.store.conn
    out: dict[str, object] = {}
    for table, cols in {"images": "id, sha256, split", "neighbours": "config_hash, target_id, rank, neighbour_id, score",
                        "prompts": "config_hash, image_id, prompt_id, text",
                        "captions": "captioner, config_hash, image_id, text, status",
                        "queries": "config_hash, image_id, kind, text, status",
                        # metric values may differ where two scores tie within float noise (torch sums in
                        # another order with another thread count): compare which metrics exist
                        "evaluations": "eval_hash, method, query_kind, metric, n"}.items():
        rows = conn.execute(f"SELECT {cols} FROM {table} ORDER BY {cols}").fetchall()
        out[table] = [tuple(round(v, 5) if isinstance(v, float) else v for v in r) for r in rows]
    for (space,) in conn.execute("SELECT space FROM spaces ORDER BY space").fetchall():
        keys, vecs = ws.store.get_vectors(space)
        order = np.argsort(keys)
        out[f"vectors/{space}"] = ([keys[i] for i in order], np.asarray(vecs)[order])
    return out


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("vectors/"):
            assert a[key][0] == b[key][0], key
            np.testing.assert_allclose(a[key][1], b[key][1], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            assert a[key] == b[key], key
    assert a["captions"] and a["evaluations"] and a["queries"]


def test_dask_cluster_of_two_workers_gives_the_same_store_as_threads(demo_world, tmp_path, two_workers, prefect_harness):
    threads = make_workspace(tmp_path / "threads", data=demo_data(demo_world), orchestration={"batch_size": 16})
    dask = make_workspace(tmp_path / "dask", data=demo_data(demo_world), orchestration={"batch_size": 16})
    run(threads, STAGES)
    summary = run(dask, STAGES + [spec(GpuRowsStage)], runner="dask", dask_address=two_workers.scheduler_address)
    assert summary.status == "completed" and summary.runner == "dask"
    assert_same(snapshot(threads), snapshot(dask))
    # the scaled-out batches ran in the cluster's worker processes, on both of them
    from distributed import Client

    with Client(two_workers) as client:
        worker_pids = set(client.run(os.getpid).values())
    assert set({pid for _, pid, _, _ in log_rows(dask, GpuRowsStage.name)}) == worker_pids and len(worker_pids) == 2
    assert len(outputs(dask, GpuRowsStage.name)) == N_IMAGES


def test_default_local_cluster_runs_gpu_stage_batches_in_a_worker(demo_world, tmp_path, prefect_harness):
    ws = make_workspace(tmp_path / "ws", data=demo_data(demo_world), orchestration={"batch_size": 16, "runner": "dask"})
    summary = run(ws, ["ingest", spec(GpuRowsStage)])
    assert summary.runner == "dask"
    pids = {pid for _, pid, _, _ in log_rows(ws, GpuRowsStage.name)}
    assert len(pids) == 1 and os.getpid() not in pids
    assert len(outputs(ws, GpuRowsStage.name)) == N_IMAGES
    again = run(ws, ["ingest", spec(GpuRowsStage)])      # nothing to compute: settled before a cluster or Prefect
    assert again.stage(GpuRowsStage.name).unchanged == again.stage(GpuRowsStage.name).batches
    assert again.flow_run_id == "" and again.ran_batches == 0


def test_cluster_spec_pins_one_single_threaded_worker_per_gpu():
    spec_ = cluster_spec([0, 1, 2])
    assert [w["options"]["env"] for w in spec_.values()] == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(3)]
    assert all(w["options"]["nthreads"] == 1 for w in spec_.values())
    assert [w["options"]["env"] for w in cluster_spec([]).values()] == [{}]


def test_the_local_cluster_never_forks_this_process_even_when_dask_is_told_to():
    """The flow's process runs Prefect's threads: its worker processes are spawned, whatever Dask's config says."""
    import dask
    from distributed import Client

    from flows.runners import local_cluster

    forks: list[int] = []
    os.register_at_fork(before=lambda: forks.append(os.getpid()))
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        with local_cluster(gpus=[]) as address, Client(address) as client:
            assert client.submit(os.getpid).result() != os.getpid()
    assert not forks
