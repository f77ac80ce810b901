"""Workspaces left inconsistent by an earlier capsearch (writes that were not one transaction) heal on the
next run: an evaluation whose metrics were committed without its summary is computed again."""
from __future__ import annotations

import json

import pytest

from pipeline.evaluation import load_evaluation
from pipeline.reports.tables import evaluation_json
from pipeline.stages.registry import stage_hash
from pipeline.stages.run import run_stage
from pipeline.stages.registry import pipeline_stages
from pipeline.workspace import Workspace
from tests.fixtures.cli import run_cli
from tests.fixtures.workspaces import make_workspace


@pytest.fixture
def evaluated(tmp_path):
    from pipeline.datasets.demo import generate_demo_world

    generate_demo_world(tmp_path / "demo", n_images=40, seed=9)
    ws = make_workspace(tmp_path / "ws", data={"source": "demo", "path": str(tmp_path / "demo"), "demo_images": 40,
                                               "n_targets": 16}, evaluate={"n_boot": 100})
    for stage in pipeline_stages(ws):
        run_stage(stage)
    return ws


def _lose_the_summary(ws: Workspace, eval_hash: str) -> None:
    """The state a crash between the two commits of capsearch 1 left: metrics stored, summary not."""
    with ws.store.transaction() as c:
        c.execute("DELETE FROM meta WHERE key=?", (f"evaluation/{eval_hash}",))
    assert ws.store.evaluations(eval_hash) and load_evaluation(Workspace(ws.root)) is None


def _comparable(result) -> dict:
    data = evaluation_json(result)
    return {k: v for k, v in data.items() if k not in ("created_at", "seconds")}


def test_an_evaluation_with_metrics_but_no_summary_is_computed_again(evaluated, capsys, prefect_harness):
    ws = evaluated
    eval_hash = stage_hash(ws, "evaluate")
    expected = _comparable(load_evaluation(ws))
    _lose_the_summary(ws, eval_hash)
    evaluate = next(s for s in pipeline_stages(ws) if s.name == "evaluate")
    assert evaluate.counts().missing == evaluate.counts().total      # status says so

    code, _, err = run_cli(capsys, "run", "--stage", "evaluate,report", "-w", str(ws.root))
    assert code == 0, err
    assert _comparable(load_evaluation(Workspace(ws.root))) == expected

    _lose_the_summary(ws, eval_hash)
    code, out, err = run_cli(capsys, "evaluate", "--json", "-w", str(ws.root))
    assert code == 0, err
    data = json.loads(out)
    assert data.pop("caption_metrics")["rows"]                   # the caption metrics ride along (issue 14)
    assert {k: v for k, v in data.items() if k not in ("created_at", "seconds")} == expected
