"""Crash injection at every commit point of every stage: `capsearch run` in a real process ends with
``os._exit`` at the named point (``pipeline.crashpoints``); a rerun must end in the same store, the same
snapshots and the same search results as a run that never crashed, and the dead run is marked crashed."""
from __future__ import annotations

from pathlib import Path

import pytest

from flows.api import run
from pipeline import crashpoints as cp
from pipeline.datasets.demo import generate_demo_world
from pipeline.stages.run import run_stage
from pipeline.stages.registry import STAGE_ORDER, pipeline_stages
from pipeline.workspace import Workspace
from tests.fixtures.commands import capsearch_child
from tests.fixtures.store_content import (diff_content, diff_searches, diff_vectors, search_results, snapshots_content,
                                         store_content)
from tests.fixtures.workspaces import make_workspace

N_IMAGES, N_TARGETS = 48, 24


def settings(world: Path, blip_dir: Path) -> dict:
    """Small batches everywhere, so that every stage has several commits to crash between. Besides kNN
    consensus (whose captions are reference captions, embedded while captioning) a tiny BLIP writes new
    caption texts, so that embed-captions has work of its own."""
    return {
        "data": {"source": "demo", "path": str(world), "demo_images": N_IMAGES, "n_targets": N_TARGETS},
        "orchestration": {"batch_size": 8, "cheap_batch_size": 8},
        "image_embedder": {"batch_size": 4, "num_workers": 0},
        "neighbours": {"block_size": 16},
        "captioners": {"enabled": ["knn-consensus", "blip-tiny"],
                       "knn-consensus": {"kind": "knn-consensus", "batch_size": 4},
                       "blip-tiny": {"kind": "blip", "model": str(blip_dir), "batch_size": 4, "max_new_tokens": 8}},
        "runtime": {"device": "cpu"},
        "evaluate": {"n_boot": 200},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash-world") / "demo"
    generate_demo_world(root, n_images=N_IMAGES, seed=11)
    return root


@pytest.fixture(scope="module")
def clean(world, tiny_blip_dir, tmp_path_factory):
    """The store, snapshots and searches of a run that never crashed (stage by stage, in this process)."""
    ws = make_workspace(tmp_path_factory.mktemp("clean") / "ws", **settings(world, tiny_blip_dir))
    for stage in pipeline_stages(ws):
        report = run_stage(stage)
        assert report.failed == 0, report
    return store_content(ws), snapshots_content(ws), search_results(ws)


# (point, which hit, its stage) in pipeline order. Each run crashes at its point; the next run reruns the
# stage of the previous crash before it goes on to its own point, so it must recover from that crash to
# get there. A later hit crashes in the middle of a stage, with earlier batches of the same stage committed.
CHAIN = [
    (cp.INGEST_PREPARE, 1, "ingest"), (cp.INGEST_BATCH, 2, "ingest"), (cp.BATCH_COMMITTED, 3, "ingest"),
    (cp.INGEST_FINALIZE, 1, "ingest"), (cp.EMBED_IMAGES_BATCH, 2, "embed-images"),
    (cp.FILE_RENAME, 1, "embed-images"), (cp.SNAPSHOT_DATA, 1, "embed-images"), (cp.NEIGHBOURS_PREPARE, 1, "neighbours"),
    (cp.NEIGHBOURS_BATCH, 2, "neighbours"),
    (cp.PROMPTS_BATCH, 2, "prompts"), (cp.CAPTION_BATCH, 2, "caption"), (cp.EMBED_CAPTIONS_BATCH, 2, "embed-captions"),
    (cp.CAPTION_METRICS_BATCH, 1, "caption-metrics"), (cp.QUERIES_BATCH, 2, "queries"), (cp.EVALUATE_RESULTS, 1, "evaluate"), (cp.REPORT_FILES, 1, "report"),
]


def test_every_crash_point_is_in_the_chain():
    assert {p for p, _, _ in CHAIN} == set(cp.ALL_POINTS)


def assert_committed_state_is_whole(ws: Workspace) -> None:
    """What a crash leaves is a set of whole batches: no photo without its captions, no metrics without
    their summary, no caption-metrics summary without its rows, no stage run still shown as running, and the
    run does not look finished."""
    from pipeline.stages.ingest import IngestStage

    store = ws.store
    stored = set(store.image_ids())
    assert stored <= IngestStage(ws).done_items(), "a stored photo lacks the captions it was ingested with"
    for eval_hash in {r[0] for r in store.conn.execute("SELECT DISTINCT eval_hash FROM evaluations")}:
        assert store.get_meta(f"evaluation/{eval_hash}") is not None, "metrics without their summary"
    for (config_hash,) in store.conn.execute("SELECT config_hash FROM caption_metric_summaries").fetchall():
        summary = store.caption_metrics.summary(config_hash)
        rows = {r.row_hash for r in summary.rows}
        assert store.caption_metrics.stored_rows(rows) == rows, "a caption-metrics summary without its rows"
    assert [r for r in store.stage_runs() if r.status == "running"] == []
    report = next(s for s in pipeline_stages(ws) if s.name == "report")
    assert report.counts().done == 0, "a crashed run must not look finished"


@pytest.mark.slow
def test_runs_crashed_at_every_commit_point_end_like_a_clean_run(world, tiny_blip_dir, clean, tmp_path, prefect_harness):
    ws = make_workspace(tmp_path / "ws", **settings(world, tiny_blip_dir))
    previous = "ingest"
    for point, nth, stage in CHAIN:
        stages = STAGE_ORDER[STAGE_ORDER.index(previous):STAGE_ORDER.index(stage) + 1]
        crashed = capsearch_child(ws, "run", "--stage", ",".join(stages), env={cp.ENV: f"{point}@{nth}"})
        assert crashed.returncode == cp.CRASH_EXIT_CODE, (
            f"the run did not reach {point}@{nth} (exit {crashed.returncode}): {crashed.stderr[-3000:]}")
        assert_committed_state_is_whole(Workspace(ws.root))
        previous = stage

    ws = Workspace(ws.root)
    summary = run(ws)   # the whole pipeline, as `capsearch run` after the last crash
    assert summary.status == "completed", summary
    expected_store, expected_snapshots, expected_searches = clean
    assert diff_content(store_content(ws), expected_store) == []
    assert diff_vectors(snapshots_content(ws), expected_snapshots) == []
    assert diff_searches(search_results(ws), expected_searches) == []
    runs = ws.store.stage_runs(limit=500)
    # every crashed run is marked crashed (a crash in a stage's prepare comes before its run is recorded)
    assert sum(r.status == "crashed" for r in runs) == len(CHAIN) - 2
    assert all(r.status != "running" for r in runs)
    assert list(ws.root.rglob("*.tmp")) == [], "temporary files of crashed writers are cleaned up"


def test_a_crash_while_the_configuration_is_written_keeps_the_old_file(tmp_path, prefect_harness):
    """capsearch.toml is replaced atomically: killed before the rename, the old file is whole, and the
    temporary file of the dead writer is removed by the next write."""
    ws = make_workspace(tmp_path / "ws", neighbours={"k": 7})
    before = ws.config_path.read_text()
    crashed = capsearch_child(ws, "init", "--force", env={cp.ENV: cp.FILE_RENAME})
    assert crashed.returncode == cp.CRASH_EXIT_CODE, crashed.stderr[-2000:]
    assert ws.config_path.read_text() == before
    assert [p.name for p in ws.root.iterdir() if p.name.endswith(".tmp")] != []
    again = capsearch_child(ws, "init", "--force")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "k = 5" in ws.config_path.read_text()
    assert [p.name for p in ws.root.iterdir() if p.name.endswith(".tmp")] == []
