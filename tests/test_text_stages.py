"""The text stages on a small demo world (lite profile, real MiniLM): the whole pipeline end to end,
no leakage of evaluation queries into prompts, retrieval quality far above chance, the queries stage
against a real local chat server, and embedding reuse by caption text."""
from __future__ import annotations


import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.metrics import rank_bounds, recall_at_k, reciprocal_rank
from pipeline.queries.reference import clean_caption
from pipeline.search import cosine_scores
from pipeline.keys import document_space
from pipeline.search_service import SearchIndex, oracle_captions
from pipeline.stages.run import run_stage
from pipeline.stages.registry import build_stage, pipeline_stages, stage_hash
from pipeline.workspace import Workspace
from tests.fixtures.openai_server import Reply
from tests.fixtures.text_worlds import WORLD_STAGES, small_workspace, text_world
from tests.fixtures.workspaces import make_workspace


@pytest.fixture(scope="module")
def world() -> Workspace:
    return Workspace(text_world())


# ----------------------------------------------------------------------------------------- end to end

def test_every_stage_is_done_after_one_run(world):
    for stage in pipeline_stages(world, WORLD_STAGES):
        counts = stage.counts()
        assert counts.total > 0 and counts.done == counts.total and counts.failed == 0, counts
    reports = world.reports_dir
    for name in ("metrics.json", "metrics.csv", "recall_at_k.png", "mrr.png", "index.html"):
        assert (reports / name).stat().st_size > 0
    eval_hash = stage_hash(world, "evaluate")
    assert (reports / f"report-{eval_hash}.html").exists()


def test_running_again_computes_nothing(world):
    for stage in pipeline_stages(world, WORLD_STAGES[4:]):
        assert stage.plan(only_missing=True) == [], stage.label


def test_queries_never_use_a_caption_shown_to_the_vlm(world):
    store = world.store
    targets = set(store.image_ids("target"))
    neighbours = store.neighbours(stage_hash(world, "neighbours"))
    assert set(neighbours) == targets
    assert all(n.id not in targets for rows in neighbours.values() for n in rows)   # targets are never neighbours
    prompts = [p.text for p in store.prompts(stage_hash(world, "prompts")).values()]
    assert len(prompts) == len(targets)
    rows = store.queries(stage_hash(world, "queries"), status="ok")
    assert {r.image_id for r in rows} == targets and {r.kind for r in rows} == {"short", "detail"}
    refs = store.reference_captions(sorted(targets))
    for r in rows:
        source = refs[r.image_id][r.source_caption_idx]          # the target's own held-out caption
        if r.kind == "detail":
            assert r.text == clean_caption(source)
        for prompt in prompts:
            assert r.text not in prompt and source not in prompt
    oracle = oracle_captions(store, sorted(targets), stage_hash(world, "queries"))
    sources = {r.image_id: refs[r.image_id][r.source_caption_idx] for r in rows}
    assert set(oracle) == targets and all(oracle[t] != sources[t] for t in targets)


def _quality(world: Workspace, method: str, kind: str) -> tuple[float, float]:
    from pipeline.evaluation import load_evaluation

    r = load_evaluation(world).get(method, kind)
    return r.metrics["R@10"].value, r.metrics["MRR"].value


# Chance on 40 targets: R@10 = 0.25, MRR = H(40)/40 = 0.107. Measured on this world (short / detail queries):
# oracle R@10 1.00 / 1.00, MRR 0.89 / 0.94; knn-consensus R@10 0.58 / 0.83, MRR 0.24 / 0.28; knn-consensus
# captions shuffled across the targets (5 seeds): R@10 0.14-0.39, MRR 0.07-0.18.
ORACLE_MIN = {"R@10": 0.9, "MRR": 0.75}
KNN_MIN = {"R@10": 0.48, "MRR": 0.20}


@pytest.mark.parametrize("kind", ["short", "detail"])
def test_oracle_ranks_far_above_chance_and_knn_consensus_above_chance(world, kind):
    r10, mrr = _quality(world, "oracle", kind)
    assert r10 >= ORACLE_MIN["R@10"] and mrr >= ORACLE_MIN["MRR"], (r10, mrr)
    r10, mrr = _quality(world, "knn-consensus", kind)
    assert r10 >= KNN_MIN["R@10"] and mrr >= KNN_MIN["MRR"], (r10, mrr)


def test_shuffled_captions_fall_below_the_thresholds(world):
    """The negative control: the same captions given to the wrong photos rank near chance."""
    index = SearchIndex(world, scope="targets")
    rows = world.store.queries(stage_hash(world, "queries"), kind="detail", status="ok")
    true = np.array([index.position[r.image_id] for r in rows])
    queries = index.text_queries([r.text for r in rows])
    docs = index.documents["knn-consensus"]
    perm = np.random.default_rng(0).permutation(len(index.target_ids))
    shuffled = docs.take(perm)                          # photo i gets the caption vector of photo perm[i]
    bounds = rank_bounds(cosine_scores(queries, shuffled), true)
    assert recall_at_k(bounds, 10).mean() < KNN_MIN["R@10"] and reciprocal_rank(bounds).mean() < KNN_MIN["MRR"]
    honest = rank_bounds(cosine_scores(queries, docs), true)
    assert recall_at_k(honest, 10).mean() >= KNN_MIN["R@10"]


# ----------------------------------------------------------------------------------------- embed-captions

def _write_captions(ws: Workspace, captioner: str, texts: dict[str, str], status: str = "ok") -> None:
    rows = [{"image_id": i, "text": t, "status": status, "error": None if status == "ok" else "scripted failure"}
            for i, t in texts.items()]
    ws.store.put_captions(captioner, stage_hash(ws, "caption", captioner), rows)


def test_embed_captions_embeds_each_caption_text_once(tmp_path):
    ws = small_workspace(tmp_path, captioners={"enabled": ["knn-consensus", "blip-base"]})
    targets = ws.store.image_ids("target")
    same = {t: f"a shared caption {n % 2}" for n, t in enumerate(targets)}
    _write_captions(ws, "knn-consensus", same)
    _write_captions(ws, "blip-base", dict(list(same.items())[:3]))
    _write_captions(ws, "blip-base", {targets[3]: ""}, status="failed")
    space = document_space(build_stage(ws, "embed-captions", "knn-consensus").embedder.key)
    knn = build_stage(ws, "embed-captions", "knn-consensus")
    blip = build_stage(ws, "embed-captions", "blip-base")
    assert knn.items() == targets and blip.items() == targets[:3]      # only ok captions are items
    run_stage(knn)
    assert ws.store.vector_spaces()[space] == (384, 2)                  # two distinct texts, two vectors
    assert blip.done_items() == set(targets[:3])                        # same texts: nothing left to embed
    assert blip.plan(only_missing=True) == []
    _write_captions(ws, "knn-consensus", {targets[0]: "a new caption"})
    assert knn.plan(only_missing=True)[0].ids == (targets[0],)
    run_stage(knn)
    assert ws.store.vector_spaces()[space] == (384, 3)
    assert knn.config()["captions"] == stage_hash(ws, "caption", "knn-consensus")


# ----------------------------------------------------------------------------------------- queries

def _openai_config(url: str) -> dict:
    return {"generator": "openai", "base_url": url, "model": "gpt-4o-mini", "max_retries": 0, "timeout": 5,
            "concurrency": 2}


def test_queries_stage_records_failures_and_retries_only_them(tmp_path, chat_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ws = small_workspace(tmp_path, queries=_openai_config(chat_server.url))
    refs = ws.store.reference_captions(split="target")
    bad = sorted(refs)[1]
    marker = f"number {int(bad[6:9])} variant"                     # photo_005.jpg: "A ... picture number 5 variant 2"

    def script(request, attempt):
        if marker in request.text and attempt == 0:
            return Reply.error(500, "the model server crashed")
        return Reply.answer({"short": "coloured picture", "detail": "A coloured picture with a blue circle."},
                            prompt_tokens=100, completion_tokens=20)

    chat_server.script = script
    stage = build_stage(ws, "queries")
    assert stage.network and not build_stage(make_workspace(tmp_path / "other"), "queries").network
    run_stage(stage)
    failed = stage.failed_items()
    assert list(failed) == [bad] and "HTTP 500" in failed[bad] and bad in failed[bad]
    assert stage.done_items() == set(refs) - {bad}
    usage = ws.store.get_meta("queries/last_run")
    assert usage["requests"] == 4 and usage["failures"] == 1 and usage["prompt_tokens"] == 300
    assert usage["cost_usd"] == pytest.approx((300 * 0.15 + 60 * 0.60) / 1e6)
    n_requests = len(chat_server.requests)
    run_stage(build_stage(ws, "queries"))                            # failures are settled unless retried
    assert len(chat_server.requests) == n_requests
    run_stage(build_stage(ws, "queries"), retry_failed=True)
    assert len(chat_server.requests) == n_requests + 1 and marker in chat_server.requests[-1].text
    assert stage.failed_items() == {} and stage.done_items() == set(refs)
    rows = ws.store.queries(stage.config_hash())
    assert {r.kind for r in rows} == {"short", "detail"} and all(r.status == "ok" for r in rows)
    total = ws.store.get_meta(f"queries/usage/{stage.config_hash()}")
    assert total["requests"] == 5 and total["prompt_tokens"] == 400


def test_openai_queries_need_a_key_only_to_run(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    ws = small_workspace(tmp_path, queries={"generator": "openai"})
    stage = build_stage(ws, "queries")
    h = stage.config_hash()                                          # status works without the key
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        run_stage(stage)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    assert build_stage(ws, "queries").config_hash() == h             # the key is never part of the hash


def test_reference_queries_come_from_each_targets_own_captions(tmp_path):
    ws = small_workspace(tmp_path)
    stage = build_stage(ws, "queries")
    assert not stage.network
    run_stage(stage)
    refs = ws.store.reference_captions(split="target")
    rows = ws.store.queries(stage.config_hash(), kind="detail")
    assert len(rows) == len(refs) and all(r.text == clean_caption(refs[r.image_id][r.source_caption_idx])
                                          for r in rows)
