"""How runs behave: cancel between batches, one GPU batch at a time, one stage object and one model load per run,
clear errors, and `capsearch run` on the command line."""
from __future__ import annotations

import threading

import pytest

from capsearch.cli import main
from flows.api import run
from pipeline.errors import ConfigError
from pipeline.models import cache
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.flow_stages import (N_IMAGES, GpuRowsStage, ModelRowsStage, ParallelRowsStage, SlowRowsStage,
                                      computed, demo_data, flow_run, outputs, spec)

BATCH = 8


@pytest.fixture
def ws(demo_world, tmp_path, prefect_harness):
    ws = make_workspace(tmp_path / "ws", data=demo_data(demo_world), orchestration={"batch_size": BATCH})
    run(ws, ["ingest"])
    return ws


def test_cancel_stops_between_batches_and_is_recorded(ws):
    cancel = threading.Event()
    label = SlowRowsStage.name

    def progress(event):
        if event.stage == label and event.kind == "advance" and event.done >= 2 * BATCH:
            cancel.set()

    summary = run(ws, [spec(SlowRowsStage)], progress=progress, cancel=cancel)
    assert summary.status == "cancelled"
    outcome = summary.stage(label)
    assert outcome.status == "cancelled" and outcome.ran < outcome.batches
    kept = outputs(ws, label)
    assert 2 * BATCH <= len(kept) < N_IMAGES and len(kept) % BATCH == 0, "whole batches, no partial one"
    assert ws.store.stage_runs(SlowRowsStage.name)[0].status == "cancelled"
    assert flow_run(summary.flow_run_id).state.type.value == "CANCELLED"
    assert flow_run(outcome.flow_run_id).state.type.value == "CANCELLED"

    again = run(ws, [spec(SlowRowsStage)])
    assert again.status == "completed"
    assert again.stage(label).done == N_IMAGES - len(kept)
    assert set(computed(ws, label).values()) == {1}


def test_gpu_batches_run_one_at_a_time_cpu_batches_overlap(ws):
    GpuRowsStage.reset()
    ParallelRowsStage.reset()
    summary = run(ws, [spec(GpuRowsStage), spec(ParallelRowsStage)])
    assert summary.stage(GpuRowsStage.name).ran == N_IMAGES // BATCH
    assert GpuRowsStage.max_active == 1
    assert ParallelRowsStage.max_active >= 2, "the thread runner does run CPU batches side by side"


def test_one_stage_object_and_one_model_load_serve_every_batch(ws):
    ModelRowsStage.reset()
    cache.evict(ModelRowsStage.model_key)
    loads_before = cache.load_counts.get(ModelRowsStage.model_key, 0)
    summary = run(ws, [spec(ModelRowsStage)])
    assert summary.stage(ModelRowsStage.name).ran == N_IMAGES // BATCH
    assert len(ModelRowsStage.instances) == 1
    assert cache.load_counts[ModelRowsStage.model_key] == loads_before + 1
    assert len({v.split(":")[0] for v in outputs(ws, ModelRowsStage.name).values()}) == 1


def test_unknown_stage_and_runner_are_clear_errors(ws):
    with pytest.raises(ConfigError, match="unknown stage.*embed-photos"):
        run(ws, ["embed-photos"])
    with pytest.raises(ConfigError, match="runner 'spark'"):
        run(ws, ["ingest"], runner="spark")
    with pytest.raises(ConfigError, match="cannot be imported"):
        run(ws, ["tests.no_such_module:Stage"])


def test_capsearch_run_command(ws, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["-w", str(ws.root), "run", "--stage", "ingest", "--stage", spec(GpuRowsStage)])
    assert exited.value.code in (0, None)
    out = capsys.readouterr().out
    assert "2 stages: 10 batches computed, 1 reused from the cache" in out  # ingest: one cheap batch, cached
    assert len(outputs(ws, GpuRowsStage.name)) == N_IMAGES


def test_capsearch_run_json_prints_the_run_outcome(ws, capsys):
    """`run --json`: stdout is the run's outcome as JSON (the same numbers the table shows); bars go to stderr."""
    import json

    code = 0
    try:
        main(["-w", str(ws.root), "run", "--stage", "ingest", "--stage", spec(GpuRowsStage), "--json"])
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    assert code == 0, captured.err
    outcome = json.loads(captured.out)
    assert outcome["status"] == "completed" and outcome["run_id"] is not None
    stages = {s["stage"]: s for s in outcome["stages"]}
    assert list(stages) == ["ingest", GpuRowsStage.name]
    assert stages["ingest"]["items"] == 0 and stages["ingest"]["reused"] == N_IMAGES     # ingested by the fixture
    gpu = stages[GpuRowsStage.name]
    assert gpu["status"] == "completed" and gpu["done"] == gpu["items"] == N_IMAGES and gpu["reused"] == 0
    assert gpu["ran"] == gpu["batches"] == N_IMAGES // BATCH and gpu["flow_run_id"]
    assert outcome["ran_batches"] == N_IMAGES // BATCH and outcome["failed_items"] == 0
    assert "computed" in captured.err and "reused from the cache" not in captured.out
