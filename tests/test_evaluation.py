"""Evaluation through the store and the evaluate stage, on cases small enough to compute by hand.

Four targets t0..t3, real MiniLM embeddings, captions and queries written into the store:

* knn-consensus: t0's caption is its query (rank 1); t1 and t2 share one caption that is also both of their
  queries (a tie: expected rank 1.5); t3's caption failed, so t3 is missing and ranks last (4).
* blip-base: every caption but t0's ("a bowl of fruit") failed: t0 is the only photo it scores, so it ranks
  first for t0's query, and t1..t3 are missing, tied at the bottom behind t0 (ranks 2..4, expected 3).
* Short queries are the same texts, except that t3's short query failed to generate.

K = 10 is larger than the collection (4), so R@10 is 1 for every query.
"""
from __future__ import annotations

import math

import pytest

from pipeline.errors import CapsearchError
from pipeline.evaluation import current_eval_hash, evaluation_plan, load_evaluation
from pipeline.stages.registry import stage_hash
from pipeline.stages.run import run_stage
from pipeline.stages.registry import build_stage
from pipeline.workspace import Workspace
from tests.fixtures.text_worlds import FRUIT, hand_workspace
from tests.fixtures.workspaces import make_workspace

@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Workspace:
    ws = hand_workspace(tmp_path_factory.mktemp("hand"))
    run_stage(build_stage(ws, "evaluate"))
    return ws


def metric(ws: Workspace, method: str, kind: str, name: str) -> float:
    return load_evaluation(ws).get(method, kind).metrics[name].value


def test_ties_missing_captions_and_k_beyond_the_collection(evaluated):
    # detail queries: knn ranks 1, 1.5, 1.5, 4
    assert metric(evaluated, "knn-consensus", "detail", "R@1") == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    assert metric(evaluated, "knn-consensus", "detail", "R@5") == pytest.approx(1.0)
    assert metric(evaluated, "knn-consensus", "detail", "R@10") == pytest.approx(1.0)
    assert metric(evaluated, "knn-consensus", "detail", "MRR") == pytest.approx((1 + 0.75 + 0.75 + 0.25) / 4)
    assert metric(evaluated, "knn-consensus", "detail", "MedR") == pytest.approx(1.5)
    # blip-base: t0 first (the only photo it scores), t1..t3 missing: uniform over 2..4 behind it
    assert metric(evaluated, "blip-base", "detail", "R@1") == pytest.approx(0.25)
    assert metric(evaluated, "blip-base", "detail", "MRR") == pytest.approx((1 + 3 * (1 / 2 + 1 / 3 + 1 / 4) / 3) / 4)
    assert metric(evaluated, "blip-base", "detail", "MedR") == pytest.approx(3.0)
    # short queries: t3's query failed to generate, so only three are evaluated
    assert metric(evaluated, "knn-consensus", "short", "R@1") == pytest.approx(2 / 3)
    assert metric(evaluated, "knn-consensus", "short", "MRR") == pytest.approx((1 + 0.75 + 0.75) / 3)


def test_missing_targets_and_failed_queries_are_counted_not_dropped(evaluated):
    result = load_evaluation(evaluated)
    assert result.missing == {"knn-consensus": 1, "blip-base": 3} and result.not_applicable == {}
    assert result.n_queries == {"short": 3, "detail": 4} and result.failed_queries == 1
    assert result.get("knn-consensus", "detail").n_queries == 4
    t = evaluated.store.image_ids("target")
    rows = {r.image_id: r for r in evaluated.store.rankings(result.eval_hash, "knn-consensus", "detail")}
    assert rows[t[0]].rank == 1.0 and rows[t[0]].top_ids[0] == t[0]
    assert rows[t[1]].rank == 1.5 and set(rows[t[1]].top_ids[:2]) == {t[1], t[2]}
    assert rows[t[3]].rank == 4.0 and t[3] not in rows[t[3]].top_ids and len(rows[t[3]].top_ids) == 3
    blip = {r.image_id: r for r in evaluated.store.rankings(result.eval_hash, "blip-base", "detail")}
    assert blip[t[0]].rank == 1.0 and blip[t[0]].top_ids == (t[0],)
    assert [blip[i].rank for i in t[1:]] == [3.0] * 3 and all(blip[i].top_ids == (t[0],) for i in t[1:])


def test_paired_difference_against_the_baseline(evaluated):
    stored = {(r.method, r.query_kind, r.metric): r
              for r in evaluated.store.evaluations(current_eval_hash(evaluated))}
    r1 = stored[("knn-consensus", "detail", "R@1")]
    d1 = r1.vs_baseline
    assert r1.baseline == "blip-base" and d1.diff == pytest.approx(0.5 - 0.25)
    assert d1.low <= d1.diff <= d1.high and 0 < d1.p <= 1
    assert stored[("knn-consensus", "detail", "MedR")].vs_baseline.diff == pytest.approx(1.5 - 3.0)
    d10 = stored[("knn-consensus", "detail", "R@10")].vs_baseline
    assert d10.diff == 0 and d10.p == 1.0                # both find everything within 10
    assert stored[("blip-base", "detail", "R@1")].vs_baseline is None   # the baseline is not compared with itself
    for row in stored.values():
        assert row.estimate.low <= row.estimate.value <= row.estimate.high


def test_evaluate_is_done_until_its_inputs_change(tmp_path):
    ws = hand_workspace(tmp_path)
    stage = build_stage(ws, "evaluate")
    assert stage.items() == ["knn-consensus/short", "knn-consensus/detail", "blip-base/short", "blip-base/detail"]
    before = stage.config_hash()
    run_stage(stage)
    assert stage.config_hash() == before and stage.plan(only_missing=True) == []
    t = ws.store.image_ids("target")
    ws.store.put_captions("knn-consensus", stage_hash(ws, "caption", "knn-consensus"),
                          [{"image_id": t[3], "text": FRUIT, "status": "ok"}])   # a retried caption succeeded
    assert stage.config_hash() != before and len(stage.plan(only_missing=True)[0].ids) == 4
    run_stage(stage)
    assert metric(ws, "knn-consensus", "detail", "R@1") == pytest.approx(0.75)
    assert load_evaluation(ws).missing["knn-consensus"] == 0


def test_methods_without_a_text_tower_are_skipped_with_a_reason(tmp_path):
    ws = make_workspace(tmp_path / "ws", evaluate={"extra_methods": ["clip", "hybrid", "oracle"]})
    plan = evaluation_plan(ws)
    assert list(plan.methods) == ["knn-consensus", "oracle"]
    assert set(plan.skipped) == {"clip", "hybrid"} and "no text tower" in plan.skipped["clip"]


def test_evaluate_without_queries_says_what_to_run(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    with pytest.raises(CapsearchError, match="capsearch queries"):
        run_stage(build_stage(ws, "evaluate"))


def test_baseline_outside_the_methods_gives_no_paired_test(tmp_path):
    ws = hand_workspace(tmp_path, evaluate={"baseline": "vit-gpt2", "extra_methods": [], "n_boot": 100})
    run_stage(build_stage(ws, "evaluate"))
    result = load_evaluation(ws)
    assert result.baseline is None and all(r.vs_baseline is None for r in result.results)
    assert not math.isnan(result.get("knn-consensus", "detail").metrics["MRR"].value)


def test_a_method_with_no_target_to_rank_is_not_applicable(tmp_path):
    """vit-gpt2 failed on every target: not applicable, with its reason; no value, interval, paired test or ranking
    stored (today's 'all tied last' gave R@1 = 1/4 with an interval of [0.25, 0.25] and a p-value); the stage is
    done all the same, and as the baseline it gives no paired test."""
    ws = hand_workspace(tmp_path, captioners={"enabled": ["knn-consensus", "blip-base", "vit-gpt2"]},
                        evaluate={"baseline": "vit-gpt2", "extra_methods": [], "n_boot": 100})
    t = ws.store.image_ids("target")
    ws.store.put_captions("vit-gpt2", stage_hash(ws, "caption", "vit-gpt2"),
                          [{"image_id": i, "text": "", "status": "failed", "error": "model crashed"} for i in t])
    stage = build_stage(ws, "evaluate")
    run_stage(stage)
    result = load_evaluation(ws)
    assert result.not_applicable == {"vit-gpt2": "none of the 4 targets has a usable vit-gpt2 caption (failed, empty "
                                                 "or not written)"}
    assert result.methods == ["knn-consensus", "blip-base"] and result.get("vit-gpt2", "detail") is None
    assert result.missing["vit-gpt2"] == 4 and result.baseline is None
    assert all(r.vs_baseline is None for r in result.results)
    assert {r.method for r in ws.store.evaluations(result.eval_hash)} == {"knn-consensus", "blip-base"}
    assert ws.store.rankings(result.eval_hash, "vit-gpt2") == []
    assert stage.plan(only_missing=True) == []                     # done: nothing is computed again
