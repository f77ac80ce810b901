"""Workspaces left inconsistent by an earlier capsearch (writes that were not one transaction) heal on the
next run: an evaluation whose metrics were committed without its summary is computed again."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline.evaluation import load_evaluation
from pipeline.reports.tables import evaluation_json
from pipeline.stages.registry import stage_hash
from pipeline.stages.registry import pipeline_stages
from pipeline.workspace import Workspace
from tests.fixtures.cli import run_cli


@pytest.fixture
def evaluated(tmp_path, tui_workspace):
    """A copy of the session's workspace taken through every stage (tests.fixtures.tui_world)."""
    root = tmp_path / "ws"
    shutil.copytree(tui_workspace.root, root, ignore=shutil.ignore_patterns("logs"))
    return Workspace(root)


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
