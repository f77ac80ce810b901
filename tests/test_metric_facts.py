"""One shape per idea: a metric's estimate and paired difference, one table of metric facts, one way to write
the numbers (every surface — CLI, report, TUI, artifacts — reads them from ``pipeline.metric_facts``)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest

from pipeline.estimates import Difference, Estimate, json_safe
from pipeline.metric_facts import CAPTION_METRICS, DASH, Direction, Verdict, fact, metric_cell, number


def test_medr_is_lower_is_better_and_recall_at_any_k_higher_is_better():
    assert fact("MedR").direction is Direction.LOWER
    assert fact("MRR").direction is Direction.HIGHER and fact("MRR").ceiling == 1.0
    r20 = fact("R@20")
    assert (r20.name, r20.direction, r20.digits, r20.ceiling) == ("R@20", Direction.HIGHER, 3, 1.0)
    assert fact("copy rate").direction is Direction.NEITHER and fact("length").digits == 1
    assert fact("a metric of a later capsearch").direction is Direction.NEITHER
    # the caption catalogue's order is the order the stage computes and stores them in
    assert [f.name for f in CAPTION_METRICS][:4] == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]
    assert fact("MedR").best([3.0, None, 1.5, float("nan")]) == 1.5
    assert fact("R@1").best([0.2, 0.5]) == 0.5 and fact("length").best([1.0, 2.0]) is None


def test_a_significant_difference_reads_in_the_metric_s_direction():
    fewer_ranks = Difference(-2.0, -3.0, -1.0, 0.01)
    assert fact("MedR").verdict(fewer_ranks) is Verdict.BETTER          # a lower median rank is better
    assert fact("R@1").verdict(fewer_ranks) is Verdict.WORSE
    assert fact("R@1").verdict(Difference(0.1, -0.1, 0.3, 0.2)) is None   # not significant
    assert fact("R@1").verdict(Difference(0.0, 0.0, 0.0, 0.001)) is None  # no difference
    assert fact("copy rate").verdict(Difference(1.0, 1.0, 1.0, 0.001)) is None   # no direction


def test_the_cell_writes_value_interval_difference_and_p_in_the_metric_s_decimals():
    cell = metric_cell("R@1", Estimate(0.36666, 0.3, 0.4333), Difference(0.05, -0.0167, 0.1167, 0.08))
    assert (cell.value, cell.interval, cell.spread) == ("0.367", "[0.30, 0.43]", "±0.07")
    assert (cell.compared, cell.delta_interval, cell.verdict) == ("Δ +0.05 p=0.080", "[-0.02, +0.12]", None)
    assert cell.line() == "0.367 [0.30, 0.43] Δ +0.05 p=0.080"
    medr = metric_cell("MedR", Estimate(12.5, 10.0, 15.0), Difference(-2.0, -3.0, -1.0, 0.002))
    assert medr.line() == "12.5 [10.0, 15.0] Δ -2.0 p=0.002" and medr.verdict is Verdict.BETTER
    count = metric_cell("vocabulary", Estimate(412.0))         # a count has no interval
    assert count.line() == "412" and count.interval == "" and count.spread is None
    assert metric_cell("R@1", None) is None and metric_cell("R@1", Estimate(float("nan"), 0.1, 0.2)) is None
    assert metric_cell("R@1", Estimate(0.5, 0.4, 0.6), Difference(None, None, None, None)).compared == ""
    assert number(None, 3) == number(float("nan"), 3) == DASH == "–"


def test_estimates_are_the_json_users_parse():
    """``--json`` and metrics.json keep their keys: {value, low, high} and {diff, low, high, p}, NaN as null."""
    data = json_safe({"metrics": {"R@1": asdict(Estimate(0.5, float("nan"), 0.75))},
                      "vs_baseline": {"R@1": asdict(Difference(0.25, 0.0, 0.5, 0.04))}})
    assert json.loads(json.dumps(data, allow_nan=False)) == {
        "metrics": {"R@1": {"value": 0.5, "low": None, "high": 0.75}},
        "vs_baseline": {"R@1": {"diff": 0.25, "low": 0.0, "high": 0.5, "p": 0.04}}}
    assert Estimate.from_dict(data["metrics"]["R@1"]) == Estimate(0.5, None, 0.75)
    assert Difference.from_dict(data["vs_baseline"]["R@1"]).significant


def test_an_evaluation_reads_back_typed_from_its_stored_json():
    from pipeline.evaluation import EvaluationResult, MethodResult

    result = EvaluationResult(
        eval_hash="e", queries_hash="q", methods=["a", "b"], kinds=["short"], metrics=["R@1", "MedR"], baseline="a",
        n_targets=4, n_queries={"short": 4}, failed_queries=0, missing={"a": 0, "b": 1}, skipped={},
        results=[MethodResult("a", "short", 4, 0, {"R@1": Estimate(0.5, 0.25, 0.75), "MedR": Estimate(1.5, 1.0, 3.0)}),
                 MethodResult("b", "short", 4, 1, {"R@1": Estimate(0.25, 0.0, 0.5), "MedR": Estimate(3.0, 1.5, 4.0)},
                              {"R@1": Difference(-0.25, -0.5, 0.0, 0.3), "MedR": Difference(1.5, 0.0, 3.0, 0.1)})])
    stored = json.loads(json.dumps(json_safe(result.as_dict()), allow_nan=False))
    assert stored["results"][1]["vs_baseline"]["MedR"] == {"diff": 1.5, "low": 0.0, "high": 3.0, "p": 0.1}
    back = EvaluationResult.from_dict(stored)
    assert back == result
    assert back.get("b", "short").difference("MedR") == Difference(1.5, 0.0, 3.0, 0.1)
    assert back.get("a", "short").difference("R@1") is None and not math.isnan(back.get("a", "short").metrics["R@1"].value)


@pytest.mark.parametrize("metric", ["R@1", "R@10", "MRR", "MedR", "BLEU-4", "length", "vocabulary"])
def test_every_surface_writes_a_metric_s_cell_the_same_way(metric):
    """The CLI's table, the report's HTML, the artifacts' row and the TUI's cell show the same numbers."""
    from rich.text import Text

    from capsearch.cli.summary import _cell
    from flows.result_tables import estimate_cell
    from pipeline.reports.html import estimate_html
    from pipeline.store_rows import EvaluationRow
    from tui.screens.evaluation import cell as tui_cell

    estimate, difference = Estimate(3.14159, 2.5, 3.75), Difference(-0.51, -1.02, -0.04, 0.01)
    c = metric_cell(metric, estimate, difference)
    assert estimate_cell(metric, estimate, difference) == c.line()
    cli = Text.from_markup(_cell(metric, estimate, difference)).plain
    assert cli.split("\n") == [c.value, f"{c.low}–{c.high}", f"Δ{c.delta}", f"p={c.p}"]
    html = estimate_html(metric, estimate, difference, "base")
    assert c.value in html and c.interval in html and c.compared in html
    row = EvaluationRow("e", "b", "short", metric, estimate, 4, "a", difference)    # the TUI reads the store's row
    assert tui_cell(row, metric).plain == f"{c.value} {c.spread}"
    assert Text.from_markup(_cell(metric, None)).plain == estimate_cell(metric, None, None) == DASH
