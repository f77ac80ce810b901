"""Reports: metrics.json / metrics.csv match the store, the charts are real PNGs, and the HTML page is
self-contained, deterministic, and shows every method's results with the true photo highlighted."""
from __future__ import annotations

import csv
import json
import re

import pytest
from PIL import Image

from pipeline.errors import CapsearchError
from pipeline.estimates import Estimate
from pipeline.evaluation import current_eval_hash, load_evaluation
from pipeline.reports import build_samples, write_report
from pipeline.reports.html import choose_samples
from pipeline.stages.run import run_stage
from pipeline.stages.registry import build_stage
from pipeline.workspace import Workspace
from tests.fixtures.text_worlds import hand_workspace, text_world


@pytest.fixture(scope="module")
def world() -> Workspace:
    return Workspace(text_world())


def test_metrics_json_and_csv_match_the_store(world):
    stored = {(r.method, r.query_kind, r.metric): r for r in world.store.evaluations(current_eval_hash(world))}
    data = json.loads((world.reports_dir / "metrics.json").read_text())
    assert data["eval_hash"] == current_eval_hash(world) and data["n_targets"] == 40
    for r in data["results"]:
        for name, m in r["metrics"].items():
            row = stored[(r["method"], r["kind"], name)]
            e = row.estimate
            assert (m["value"], m["low"], m["high"]) == pytest.approx((e.value, e.low, e.high))
    with (world.reports_dir / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(stored) == 2 * 2 * 5
    for row in rows:
        assert float(row["value"]) == pytest.approx(stored[(row["method"], row["query_kind"], row["metric"])].estimate.value)
        if row["method"] == "oracle":
            assert row["baseline"] == "knn-consensus" and 0 < float(row["p_value"]) <= 1


@pytest.mark.parametrize("name", ["recall_at_k.png", "mrr.png"])
def test_charts_are_png_images(world, name):
    with Image.open(world.reports_dir / name) as im:
        assert im.format == "PNG" and im.width >= 600 and im.height >= 400


def test_html_page_is_self_contained_and_shows_the_samples(world):
    page = (world.reports_dir / "index.html").read_text()
    assert page == (world.reports_dir / f"report-{current_eval_hash(world)}.html").read_text()
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|file:|/)|url\((?!data:)""", page)
    assert re.findall(r'src="([^"]+)"', page) and all(s.startswith("data:image/png;base64,")
                                                     for s in re.findall(r'src="([^"]+)"', page))
    thumbs = dict(re.findall(r"\.(p\d+)\{background-image:url\((data:image/jpeg;base64,[^)]+)\)\}", page))
    assert len(thumbs) == len(set(thumbs.values()))                        # each photo's bytes appear once
    sections = page.split('<section class="q">')[1:]
    assert len(sections) == world.config.report.sample_queries
    for section in sections:
        assert section.count('<td class="m">') == 2                         # knn-consensus and oracle
        true_id = re.search(r"true photo <b>([^<]+)</b>", section).group(1)
        shown = re.findall(r'<figure class="true"><div class="ph (p\d+)" role="img" aria-label="([^"]+)"', section)
        assert len(shown) == 2 and all(label == true_id and name in thumbs for name, label in shown)
        assert len(re.findall(r'class="rank (hit|lost)">true photo at #', section)) == 2
    result = load_evaluation(world)
    for method in result.methods:
        assert f">{method}<" in page or f">{method} <" in page


def test_samples_are_deterministic_and_mix_kinds(world):
    result = load_evaluation(world)
    first = build_samples(world, result, 6, 5)
    again = build_samples(world, result, 6, 5)
    assert [(s.image_id, s.kind) for s in first] == [(s.image_id, s.kind) for s in again]
    assert [s.kind for s in first] == ["short", "detail"] * 3
    ranks = {(r.method, r.query_kind, r.image_id): r.rank for r in world.store.rankings(result.eval_hash)}
    for s in first:
        for r in s.results:
            assert r.rank == ranks[(r.method, s.kind, s.image_id)] and len(r.top) == 5
    assert choose_samples([("a", "short"), ("b", "short")], 5) == choose_samples([("b", "short"), ("a", "short")], 5)


def test_report_stage_reruns_when_its_settings_change(tmp_path):
    ws = hand_workspace(tmp_path, report={"sample_queries": 2, "top": 2})
    with pytest.raises(CapsearchError, match="capsearch evaluate"):
        run_stage(build_stage(ws, "report"))
    run_stage(build_stage(ws, "evaluate"))
    stage = build_stage(ws, "report")
    run_stage(stage)
    assert stage.plan(only_missing=True) == []
    page = (ws.reports_dir / "index.html").read_text()
    assert page.count('<section class="q">') == 2
    assert "knn-consensus</b>: 1 of 4 targets have no usable caption" in page
    ws.config.report.sample_queries = 3
    assert build_stage(ws, "report").plan(only_missing=True) != []
    paths = write_report(ws, load_evaluation(ws))
    assert paths.html.read_text().count('<section class="q">') == 3


def _small_recall_result():
    """Two methods whose Recall@K stays under 0.16, R@1 0 for both (no bar to draw)."""
    from pipeline.evaluation import EvaluationResult, MethodResult

    def m(v, e=0.02):
        return Estimate(v, max(0.0, v - e), v + e)

    results = [MethodResult(method, kind, 100, 0, {"R@1": m(0.0, 0.0), "R@5": m(r5), "R@10": m(r10),
                                                   "MRR": m(mrr), "MedR": m(40.0, 5.0)})
               for method, r5, r10, mrr in (("knn-consensus", 0.06, 0.14, 0.05), ("blip-base", 0.03, 0.09, 0.03))
               for kind in ("short", "detail")]
    return EvaluationResult("e", "q", ["knn-consensus", "blip-base"], ["short", "detail"],
                            ["R@1", "R@5", "R@10", "MRR", "MedR"], "knn-consensus", 100, {"short": 100, "detail": 100},
                            0, {}, {}, results, 200)


def test_charts_are_scaled_to_the_data_and_the_legend_names_only_series_with_a_bar():
    import matplotlib.pyplot as plt

    from pipeline.reports.charts import mrr_figure, recall_figure

    result = _small_recall_result()
    fig = recall_figure(result)
    top = max(ax.get_ylim()[1] for ax in fig.axes)
    assert 0.16 <= top <= 0.2                         # the highest bar and its interval, with room for the labels
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["R@5", "R@10"]      # R@1 is 0: no bar, no entry
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert labels.count("R@1 = 0") == 4 and "0.14" in labels    # the zero bars carry their name instead
    plt.close(fig)
    fig = mrr_figure(result)
    assert 0.05 < fig.axes[0].get_ylim()[1] < 0.1
    plt.close(fig)
    for method in result.results:                     # near 1, the scale stops a little above 1
        method.metrics["R@10"] = Estimate(0.99, 0.97, 1.0)
    fig = recall_figure(result)
    assert 1.0 < fig.axes[0].get_ylim()[1] <= 1.12
    plt.close(fig)
