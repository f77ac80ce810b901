"""A method with nothing to rank is *not applicable*, everywhere a person reads the evaluation.

The set: photos with one human caption each, taken through every stage. The evaluation queries come from each
target's only caption, so the oracle (which searches a *different* human caption of each target) has nothing
to search: every target is missing. Before, ``evaluate`` printed it like any method, all targets tied last:
R@1 = 1/n with an interval of [1/n, 1/n] and a p-value against the baseline. Now it has no value, no interval
and no test, and its reason is given in the store, the CLI table, ``--json``, the report and the TUI's
Evaluation screen. No target has two captions either, so no caption quality measure is computed and the
report's "worst captions" list says so instead of ranking captions by length.
"""
from __future__ import annotations

import csv
import json

import pytest
from textual.widgets import DataTable, Static

from pipeline.evaluation import load_evaluation
from pipeline.stages.registry import build_stage
from pipeline.workspace import Workspace
from tests.fixtures.cli import run_cli
from tests.fixtures.text_worlds import one_caption_workspace
from tests.fixtures.tui_world import settle

REASON = "has a human caption other than the one its queries were made from, so the oracle has nothing to search"


@pytest.fixture(scope="module")
def one_caption(tmp_path_factory) -> Workspace:
    return one_caption_workspace(tmp_path_factory.mktemp("one-caption"))


def test_the_store_holds_the_reason_and_no_number(one_caption):
    ws = one_caption
    result = load_evaluation(ws)
    n = len(ws.store.image_ids("target"))
    assert result.not_applicable == {"oracle": f"none of the {n} targets {REASON} (a set with one caption per photo)"}
    assert result.methods == ["knn-consensus"] and result.get("oracle", "detail") is None
    assert result.missing["oracle"] == n
    assert {r.method for r in ws.store.evaluations(result.eval_hash)} == {"knn-consensus"}
    assert ws.store.rankings(result.eval_hash, "oracle") == []
    assert ws.store.get_meta(f"evaluation/{result.eval_hash}")["not_applicable"] == result.not_applicable
    assert build_stage(ws, "evaluate").plan(only_missing=True) == []      # done: a rerun computes nothing


def test_the_cli_table_and_json_say_not_applicable_without_numbers(one_caption, capsys):
    ws = one_caption
    code, out, err = run_cli(capsys, "evaluate", "-w", str(ws.root))
    assert code == 0, err
    flat = " ".join(out.split())
    assert f"oracle not applicable: none of the {len(ws.store.image_ids('target'))} targets {REASON}" in flat
    lines = out.splitlines()
    rows = [n for n, line in enumerate(lines) if line.strip().startswith("oracle ") and "not applicable:" not in line]
    assert len(rows) == 2                                           # one per query kind, each n/a and no number
    for n in rows:
        assert lines[n].split()[1:] == ["n/a"] * 5 and lines[n + 1].split() == ["not", "applicable"]
    code, out, err = run_cli(capsys, "evaluate", "--json", "-w", str(ws.root))
    assert code == 0, err
    data = json.loads(out)
    assert REASON in data["not_applicable"]["oracle"] and data["methods"] == ["knn-consensus"]
    assert {r["method"] for r in data["results"]} == {"knn-consensus"}


def test_the_report_gives_the_reason_and_no_worst_captions_by_length(one_caption):
    reports = one_caption.reports_dir
    page = (reports / "index.html").read_text()
    assert "<b>oracle</b> is not applicable" in page and f"not applicable: none of" in page
    assert "Worst captions by length" not in page
    assert "No list: no caption quality measure was computed" in page
    with (reports / "metrics.csv").open(newline="") as fh:
        assert {r["method"] for r in csv.DictReader(fh)} == {"knn-consensus"}
    assert REASON in json.loads((reports / "metrics.json").read_text())["not_applicable"]["oracle"]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_tui_evaluation_screen_says_not_applicable(one_caption):
    from tui.app import CapsearchApp

    app = CapsearchApp(one_caption, image_mode="none")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        table = app.screen.query_one("#metrics", DataTable)
        assert [str(table.get_row_at(i)[0]).split(" ")[0] for i in range(table.row_count)] == ["knn-consensus"]
        detail = " ".join(str(app.screen.query_one("#eval-detail", Static).content).split())
        assert f"oracle not applicable: none of" in detail and REASON in detail
