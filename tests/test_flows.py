"""The ``pipeline`` flow on the demo world (lite profile plus a tiny VLM): caching, invalidation, stale caches.

One cold run of every stage is made per module; each test works on a copy of that
workspace (the store and its Prefect results together), so the tests do not depend
on each other's order.
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from flows.api import RunOutcome, run
from pipeline.stages.vision import CaptionStage
from pipeline.workspace import Workspace
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.flow_stages import N_IMAGES, N_TARGETS, configure, demo_data

pytestmark = pytest.mark.slow

CAPTIONERS = ["knn-consensus", "vlm-neighbours"]
SHORT_TEMPLATE = "Photos like this one were described as:\n{captions}\nWrite one caption for this photo."


@pytest.fixture(scope="module")
def cold(demo_world, tiny_smolvlm_dir, tmp_path_factory, prefect_harness):
    """A workspace after one cold run of the whole pipeline, with the progress events it reported."""
    ws = make_workspace(tmp_path_factory.mktemp("flows-cold") / "ws", data=demo_data(demo_world),
                        orchestration={"batch_size": 16},
                        captioners={"enabled": CAPTIONERS, "vlm-neighbours": {
                            "kind": "vlm-neighbours", "model": str(tiny_smolvlm_dir), "batch_size": 4,
                            "max_new_tokens": 6, "num_beams": 1}})
    events: list[tuple[str, object]] = []
    summary = run(ws, progress=lambda e: events.append((threading.current_thread().name, e)))
    return ws, summary, events


def copy_of(ws: Workspace, dest: Path) -> Workspace:
    shutil.copytree(ws.root, dest)
    return Workspace(dest)


def by_stage(summary: RunOutcome) -> dict[str, tuple[int, int, int]]:
    """label -> (batches, reused: from the cache or with nothing to compute, ran)."""
    return {s.stage: (s.batches, s.cached + s.unchanged, s.ran) for s in summary.stages}


def caption_rows(ws: Workspace, captioner: str) -> dict[str, tuple[str, float]]:
    rows = ws.store.conn.execute("SELECT image_id, text, created_at FROM captions WHERE captioner=? AND config_hash=?",
                                 (captioner, CaptionStage(ws, captioner).config_hash()))
    return {i: (t, c) for i, t, c in rows}


def test_cold_run_computes_every_stage_and_reports_progress(cold):
    ws, summary, events = cold
    assert summary.status == "completed"
    labels = [s.stage for s in summary.stages]
    assert labels == ["ingest", "embed-images", "neighbours", "prompts", "caption:knn-consensus",
                      "caption:vlm-neighbours", "embed-captions:human", "embed-captions:knn-consensus",
                      "embed-captions:vlm-neighbours",
                      "caption-metrics", "queries", "evaluate", "report"]
    for s in summary.stages:
        assert s.status == "completed" and s.cached == 0, s
        if s.stage == "embed-captions:knn-consensus":
            # kNN consensus picks reference captions it already embedded as candidates (same text, same vector)
            assert s.items == 0 and s.ran == 0, s
        else:
            assert s.ran == s.batches > 0, s
    assert ws.store.count_images() == N_IMAGES and ws.store.count_images("target") == N_TARGETS
    for captioner in CAPTIONERS:
        assert len(caption_rows(ws, captioner)) == N_TARGETS
    assert ws.store.evaluations(), "the evaluate stage wrote metrics"
    # every stage with work finished at its total; batch progress came from the task threads
    finals = {e.stage: e for _, e in events if e.kind == "finish"}
    assert set(finals) == set(labels)
    for label in labels:
        if label == "caption-metrics":   # counts its units of work: each metric of each row, tokenizer, summary
            assert finals[label].done == finals[label].total > summary.stage(label).items
        else:
            assert finals[label].done == finals[label].total == summary.stage(label).items
    assert any(thread != threading.main_thread().name for thread, e in events if e.kind == "advance")
    # each stage run is recorded in the store with its Prefect flow run
    runs = {(r.stage, r.variant): r for r in ws.store.stage_runs(limit=100)}
    assert runs[("caption", "vlm-neighbours")].status == "completed"
    assert runs[("caption", "vlm-neighbours")].flow_run_id == summary.stage("caption:vlm-neighbours").flow_run_id


def test_every_stage_run_with_work_has_one_finished_progress_artifact_off_the_artifacts_page(cold):
    """One progress artifact per stage run, on its flow run; without a key, so the Artifacts page (keyed
    artifacts) keeps to the run's summary and results instead of a collection per stage run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    _, summary, _ = cold
    ids = [s.flow_run_id for s in summary.stages if s.items]  # a stage with nothing to do has no progress to show
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
    progress = [a for a in artifacts if a.type == "progress"]
    assert sorted(str(a.flow_run_id) for a in progress) == sorted(ids)
    assert all(a.key is None and a.data == 100.0 for a in progress)
    vlm = next(a for a in progress if str(a.flow_run_id) == summary.stage("caption:vlm-neighbours").flow_run_id)
    assert vlm.description == f"caption:vlm-neighbours: {N_TARGETS} of {N_TARGETS} items"


def test_second_run_computes_nothing_and_needs_no_prefect(cold, tmp_path):
    """Every stage has nothing to compute: the run settles them before Prefect starts (flows.plan), so it has no
    flow run; each stage run is recorded with the workspace run, as a flow's would be."""
    ws = copy_of(cold[0], tmp_path / "ws")
    before = {c: caption_rows(ws, c) for c in CAPTIONERS}
    vectors = ws.store.conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    summary = run(ws)
    assert summary.status == "completed" and summary.flow_run_id == ""
    for s in summary.stages:
        assert (s.unchanged, s.ran, s.items, s.done, s.flow_run_id) == (s.batches, 0, 0, 0, ""), s
    assert {c: caption_rows(ws, c) for c in CAPTIONERS} == before      # same rows, same created_at
    assert ws.store.conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == vectors
    recorded = ws.store.stage_runs(limit=len(summary.stages))
    assert {(r.stage, r.variant) for r in recorded} == {(s.name, s.variant) for s in summary.stages}
    assert {(r.status, r.run_id) for r in recorded} == {("completed", summary.run_id)}


def test_prompt_template_change_reruns_prompts_vlm_captions_and_what_follows(cold, tmp_path):
    ws = copy_of(cold[0], tmp_path / "ws")
    old = caption_rows(ws, "vlm-neighbours")
    template = tmp_path / "template.txt"
    template.write_text(SHORT_TEMPLATE, encoding="utf-8")
    configure(ws, prompts={"template": str(template)})
    summary = run(ws)
    stages = by_stage(summary)
    for label in ("ingest", "embed-images", "neighbours", "caption:knn-consensus", "embed-captions:knn-consensus",
                  "queries"):
        batches, reused, ran = stages[label]
        assert reused == batches and ran == 0, (label, stages[label])
    for label in ("prompts", "caption:vlm-neighbours", "embed-captions:vlm-neighbours", "evaluate", "report"):
        batches, reused, ran = stages[label]
        assert reused == 0 and ran == batches, (label, stages[label])
    new = caption_rows(ws, "vlm-neighbours")
    assert set(new) == set(old) and len(new) == N_TARGETS
    prompt = ws.store.prompt_for(sorted(new)[0])
    assert prompt is not None and prompt.text.startswith("Photos like this one were described as:")


def test_deleted_captions_are_computed_again(cold, tmp_path):
    ws = copy_of(cold[0], tmp_path / "ws")
    old = {c: caption_rows(ws, c) for c in CAPTIONERS}
    ws.store.delete_captions()
    summary = run(ws)
    for captioner in CAPTIONERS:
        s = summary.stage(f"caption:{captioner}")
        assert s.cached == 0 and s.ran == s.batches and s.done == N_TARGETS
    new = {c: caption_rows(ws, c) for c in CAPTIONERS}
    for captioner in CAPTIONERS:
        assert {i: t for i, (t, _) in new[captioner].items()} == {i: t for i, (t, _) in old[captioner].items()}
    neighbours = summary.stage("neighbours")
    assert neighbours.cached + neighbours.unchanged == neighbours.batches and neighbours.ran == 0


def test_a_deleted_store_never_meets_a_stale_cache_hit(cold, tmp_path):
    """The Prefect cache records survive, the store does not: every batch must run again."""
    ws = copy_of(cold[0], tmp_path / "ws")
    assert any(ws.results_dir.iterdir())
    ws.db_path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(ws.db_path) + suffix).unlink(missing_ok=True)
    shutil.rmtree(ws.root / "arrays", ignore_errors=True)
    ws = Workspace(ws.root)
    summary = run(ws)
    for s in summary.stages:
        if s.stage == "embed-captions:knn-consensus":
            # its outputs were written again earlier in this run (kNN consensus embeds the captions it picks from)
            assert s.items == 0, s
        else:
            assert s.cached == 0 and s.ran == s.batches, s
    assert len(caption_rows(ws, "knn-consensus")) == N_TARGETS
