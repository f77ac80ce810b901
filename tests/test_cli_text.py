"""The text commands end to end: search, evaluate (table, --json, --baseline), report, queries against a
local chat server (failure, then --retry-failed), embed-captions, and the summary `capsearch demo` ends with."""
from __future__ import annotations

import json

import pytest

from tests.fixtures.cli import run_cli
from capsearch.cli.summary import print_summary
from pipeline.evaluation import current_eval_hash, load_evaluation
from pipeline.reports.tables import evaluation_json
from pipeline.stages.registry import stage_hash
from pipeline.workspace import Workspace
from tests.fixtures.openai_server import Reply
from tests.fixtures.text_worlds import hand_workspace, small_workspace, text_world


@pytest.fixture(scope="module")
def world() -> Workspace:
    return Workspace(text_world())


@pytest.fixture(scope="module")
def a_detail_query(world) -> dict:
    return world.store.queries(stage_hash(world, "queries"), kind="detail", status="ok")[5]


def test_search_prints_a_ranked_table(world, capsys, a_detail_query):
    q = a_detail_query
    code, out, err = run_cli(capsys, "search", q.text, "--by", "oracle", "-k", "3", "-w", str(world.root))
    assert code == 0, err
    assert "by oracle" in out and out.count(".jpg") >= 3
    assert f"evaluation query (detail) of {q.image_id}" in out and "methods: knn-consensus, oracle" in out


def test_search_json(world, capsys, a_detail_query):
    q = a_detail_query
    code, out, _ = run_cli(capsys, "search", q.text, "-k", "4", "--json", "--scope", "targets",
                           "-w", str(world.root))
    data = json.loads(out)
    assert code == 0 and data["method"] == "knn-consensus" and [h["rank"] for h in data["hits"]] == [1, 2, 3, 4]
    assert data["scope"] == "targets" and {h["matched"] for h in data["hits"]} == {"knn-consensus"}
    assert data["evaluation_query"]["image_id"] == q.image_id and data["evaluation_query"]["rank"] >= 1
    # the whole collection by default: every caption kind, and the hit says which one matched
    code, out, _ = run_cli(capsys, "search", q.text, "-k", "4", "--json", "-w", str(world.root))
    data = json.loads(out)
    assert code == 0 and data["scope"] == "collection" and data["method"] == "captions"
    assert data["methods"][:2] == ["captions", "knn-consensus"]
    assert all(h["matched"] in ("human", "knn-consensus") for h in data["hits"])
    code, _, err = run_cli(capsys, "search", "a dog", "--by", "clip", "-w", str(world.root))
    assert code == 1 and "no text tower" in err


def test_evaluate_json_is_the_stored_evaluation(world, capsys):
    code, out, err = run_cli(capsys, "evaluate", "--json", "-w", str(world.root))
    assert code == 0, err
    data = json.loads(out)                                     # nothing but JSON on stdout
    captions = data.pop("caption_metrics")                     # the caption-metrics stage's summary
    assert data == json.loads(json.dumps(evaluation_json(load_evaluation(world))))
    assert captions["rows"] == ["human", "knn-consensus"] and "CIDEr-D" in captions["values"]["knn-consensus"]
    assert {(r["method"], r["kind"]) for r in data["results"]} == {
        (m, k) for m in ("knn-consensus", "oracle") for k in ("short", "detail")}


def test_evaluate_table_and_baseline_choice(world, capsys):
    code, out, _ = run_cli(capsys, "evaluate", "-w", str(world.root))
    assert code == 0 and f"Evaluation {current_eval_hash(world)}" in out
    assert "short queries" in out and "detail queries" in out and "knn-consensus" in out and "MedR" in out
    code, out, _ = run_cli(capsys, "evaluate", "--json", "--baseline", "oracle", "-w", str(world.root))
    data = json.loads(out)
    assert code == 0 and data["baseline"] == "oracle" and data["eval_hash"] != current_eval_hash(world)
    knn = next(r for r in data["results"] if r["method"] == "knn-consensus" and r["kind"] == "detail")
    assert knn["vs_baseline"]["MRR"]["diff"] < 0                # the oracle is the upper bound
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "blip-large", "-w", str(world.root))
    assert code == 1 and "baseline 'blip-large' is not an evaluated method" in err


def test_report_prints_its_paths(world, capsys):
    code, out, _ = run_cli(capsys, "report", "-w", str(world.root))
    assert code == 0
    assert str(world.reports_dir / "index.html") in out or "index.html" in out
    assert "metrics.csv" in out and "recall_at_k.png" in out


def test_demo_summary_ends_with_the_table_and_report_paths(world, capsys):
    print_summary(world)
    out = capsys.readouterr().out
    assert "Evaluation" in out and "oracle" in out and "R@10" in out
    assert out.rstrip().splitlines()[-1].strip().endswith(".png") and "report" in out and "index.html" in out


def test_queries_failure_then_retry_failed(tmp_path, capsys, chat_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ws = small_workspace(tmp_path, queries={"generator": "openai", "base_url": chat_server.url, "max_retries": 0,
                                            "timeout": 5})
    bad = sorted(ws.store.reference_captions(split="target"))[2]
    marker = f"number {int(bad[6:9])} variant"
    chat_server.script = lambda request, attempt: (
        Reply.answer("this is not JSON at all", prompt_tokens=1000, completion_tokens=50) if marker in request.text and attempt == 0
        else Reply.answer({"short": "coloured circle", "detail": "A coloured picture with a circle."},
                          prompt_tokens=1000, completion_tokens=50))
    code, out, err = run_cli(capsys, "queries", "-w", str(ws.root))
    assert code == 0, err
    out = " ".join(out.split())                                # rich wraps long lines
    assert "queries: 3 of 4 done, 1 failed" in out and "retry only those with `capsearch queries --retry-failed`" in out
    assert "4 targets, 1 failed; 4000 prompt + 200 completion tokens (gpt-4o-mini); estimated cost $0.0007" in out
    code, out, _ = run_cli(capsys, "status", "--json", "-w", str(ws.root))
    problems = json.loads(out)["problems"]
    assert any(p["item"] == bad and "not valid JSON" in p["reason"] for p in problems)
    n = len(chat_server.requests)
    code, out, _ = run_cli(capsys, "queries", "--retry-failed", "-w", str(ws.root))
    assert code == 0 and "queries: 4 of 4 done" in out and len(chat_server.requests) == n + 1


def test_embed_captions_command(tmp_path, capsys):
    ws = hand_workspace(tmp_path)
    code, out, err = run_cli(capsys, "embed-captions", "-c", "knn-consensus", "-w", str(ws.root))
    assert code == 0, err
    assert "embed-captions:knn-consensus: 3 of 3 done" in out and "blip-base" not in out


def test_evaluate_says_how_many_targets_each_method_could_not_rank(tmp_path, capsys):
    ws = hand_workspace(tmp_path)
    code, out, err = run_cli(capsys, "evaluate", "-w", str(ws.root))
    assert code == 0, err
    flat = " ".join(out.split())
    assert "1 missing" in flat and "3 missing" in flat
    assert "knn-consensus: 1 of 4 targets have no usable caption" in flat
    assert "1 queries failed to generate and are not evaluated" in flat
