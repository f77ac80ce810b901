"""The Prefect dashboard tells the story of a run (issue 24): read back through the Prefect client of the test
suite's server, as the Prefect UI reads them.

A demo run (lite profile) leaves its summary, evaluation and caption-metric tables and the report's link on its
pipeline flow run, under keys stable per workspace; a folder collection's run says why there is no evaluation;
a run with a corrupt photo lists it with its reason; a cancelled and a killed run say so. Flow runs are named
and tagged for their workspace, and the batch tasks carry no tags.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from flows.api import run
from flows.naming import artifact_key, run_tags, workspace_id, workspace_tag
from pipeline.applicability import NO_HELD_OUT_CAPTIONS
from pipeline.workspace import Workspace
from tests.fixtures.collection import build_photo_folder
from tests.fixtures.commands import wait_until
from tests.fixtures.flow_stages import (N_IMAGES, N_TARGETS, RowsStage, SlowRowsStage, demo_data, outputs, spec,
                                      task_runs)
from tests.fixtures.photos import build_flickr8k_like
from tests.fixtures.workspaces import make_workspace

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
LITE_STAGES = ["ingest", "embed-images", "neighbours", "prompts", "caption:knn-consensus", "embed-captions:human",
               "embed-captions:knn-consensus", "caption-metrics", "queries", "evaluate", "report"]


# -- reading what the Prefect UI reads -------------------------------------------------------------------------
def artifacts_of(flow_run_id: str) -> dict[str, Any]:
    """key -> artifact, of the keyed artifacts attached to one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


def history(key: str) -> list[Any]:
    """Every version of a keyed artifact, newest first (what the UI shows under the key)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC)


def flow_run(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def stage_row(markdown: str, label: str) -> list[str]:
    """The cells of a stage's row in the summary's table."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]   # not at an escaped \|
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no row for {label} in:\n{markdown}")


def table(artifact: Any) -> list[dict[str, str]]:
    import json

    assert artifact.type == "table"
    return json.loads(artifact.data)


# -- the demo run ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(demo_world, tmp_path_factory, prefect_harness):
    ws = make_workspace(tmp_path_factory.mktemp("artifacts-demo") / "demo", data=demo_data(demo_world),
                        orchestration={"batch_size": 16})
    summary = run(ws)
    assert summary.status == "completed"
    return ws, summary


def test_the_demo_runs_summary_tells_what_each_stage_did(demo):
    ws, summary = demo
    found = artifacts_of(summary.flow_run_id)
    key = artifact_key(ws, "summary")
    assert key == f"capsearch-demo-{workspace_id(ws).rsplit('-', 1)[1]}-summary"
    text = found[key].data
    assert found[key].type == "markdown"
    assert text.startswith("# demo · pipeline\n") and "**Completed** in " in text
    assert "11 stages: 11 completed; 0 items failed." in text
    assert f"**workspace** `demo` (`{ws.root}`)" in text and "**profile** lite" in text
    assert [stage_row(text, s)[0] for s in LITE_STAGES] == LITE_STAGES
    for s in summary.stages:
        cells = stage_row(text, s.stage)
        assert cells[1] == "completed" and cells[2:5] == [str(s.done), str(s.reused), "0"], cells
    assert stage_row(text, "ingest")[2] == str(N_IMAGES)
    assert stage_row(text, "caption:knn-consensus")[2] == str(N_TARGETS)
    # the results, named by their keys
    for what in ("evaluation", "caption-metrics", "report"):
        assert f"`{artifact_key(ws, what)}`" in text
    assert not any("failures" in k for k in found)


def test_the_evaluation_table_has_every_method_and_query_kind_with_intervals_and_the_paired_test(demo):
    from pipeline.evaluation import load_evaluation

    ws, summary = demo
    rows = table(artifacts_of(summary.flow_run_id)[artifact_key(ws, "evaluation")])
    result = load_evaluation(ws)
    assert result is not None and result.baseline == "knn-consensus"
    assert len(rows) == len(result.methods) * len(result.kinds) >= 4
    assert list(rows[0]) == ["method", "queries", "missing targets", "R@1", "R@5", "R@10", "MRR", "MedR"]
    assert {(r["method"], r["queries"].split(" ")[0]) for r in rows} == {
        (m + (" (baseline)" if m == result.baseline else ""), k) for m in result.methods for k in result.kinds}
    for r in rows:
        method = r["method"].removesuffix(" (baseline)")
        kind = r["queries"].split(" ")[0]
        stored = result.get(method, kind)
        assert r["queries"] == f"{kind} (n={stored.n_queries})"
        for metric in ("R@1", "R@5", "R@10", "MRR"):     # values in 3 decimals, intervals and differences in 2
            m = stored.metrics[metric]
            assert r[metric].startswith(f"{m.value:.3f} [{m.low:.2f}, {m.high:.2f}]"), (metric, r[metric])
        m = stored.metrics["MedR"]
        assert r["MedR"].startswith(f"{m.value:.1f} [{m.low:.1f}, {m.high:.1f}]")
        if method == result.baseline:
            assert "Δ" not in r["R@1"]
        else:
            d = stored.vs_baseline["R@1"]
            assert r["R@1"].endswith(f"Δ {d.diff:+.2f} p={d.p:.3f}")


def test_the_caption_metrics_table_and_the_report_link(demo):
    from pipeline.caption_metrics.storage import load_caption_metrics

    ws, summary = demo
    found = artifacts_of(summary.flow_run_id)
    rows = table(found[artifact_key(ws, "caption-metrics")])
    result = load_caption_metrics(ws)
    assert [r["metric"] for r in rows] == [*result.metrics, "photos without a caption"]
    assert {"BLEU-4", "CIDEr-D", "ROUGE-L"} <= set(result.metrics)
    bleu = next(r for r in rows if r["metric"] == "BLEU-4")
    assert set(bleu) == {"metric", "human", "knn-consensus (baseline)"}
    value = result.get("knn-consensus", "BLEU-4").value
    assert bleu["knn-consensus (baseline)"].startswith(f"{value:.3f} [")
    assert "Δ" in bleu["human"] and "p=" in bleu["human"]

    report = found[artifact_key(ws, "report")]
    html = Path(ws.store.get_meta("report/latest")["html"])
    assert html.exists() and html.parent == ws.reports_dir and html.suffix == ".html"
    assert report.data == f"[{html}]({html.as_uri()})"
    assert str(html) in report.description
    assert f"report: `{html}`" in found[artifact_key(ws, "summary")].data


def test_flow_runs_are_named_and_tagged_for_their_workspace_and_batch_tasks_carry_no_tags(demo):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags

    ws, summary = demo
    tags = set(run_tags(ws))
    assert tags == {"capsearch", workspace_tag(ws), "profile:lite"}
    pipeline = flow_run(summary.flow_run_id)
    assert pipeline.name == "demo · pipeline" and tags <= set(pipeline.tags)
    stage_ids = [s.flow_run_id for s in summary.stages]
    with get_client(sync_client=True) as client:
        stage_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=stage_ids)))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=stage_ids)))
        # the dashboard's filter: this workspace's tag finds the pipeline run and every stage run
        tagged = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[workspace_tag(ws)])))
    assert {r.name for r in stage_runs} == {f"demo · {s.stage}" for s in summary.stages}
    assert all(tags <= set(r.tags) for r in stage_runs)
    assert {str(r.id) for r in tagged} >= {summary.flow_run_id, *stage_ids}
    n_batches = sum(s.batches for s in summary.stages)
    batches = task_runs(stage_ids, n_batches)         # (recorded by the server as their events arrive)
    assert len(batches) == n_batches > 0
    assert all(t.tags == [] for t in batches), {t.name: t.tags for t in batches if t.tags}


@pytest.mark.asyncio
async def test_the_tui_runs_screen_shows_the_same_names(demo):
    from prefect.settings import PREFECT_API_URL
    from textual.widgets import DataTable

    from flows.naming import pipeline_run_name, stage_run_name
    from tests.fixtures.tui_world import settle
    from tui.app import CapsearchApp

    ws, summary = demo

    def rows(table: DataTable) -> list[list[str]]:
        return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]

    app = CapsearchApp(ws, image_mode="none", prefect_api_url=PREFECT_API_URL.value())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        flow_runs = rows(app.screen.query_one("#flow-runs", DataTable))
        stage_runs = rows(app.screen.query_one("#stage-runs", DataTable))
    names = [r[0] for r in flow_runs]
    assert pipeline_run_name(ws) == "demo · pipeline" in names
    assert {stage_run_name(ws, s.stage) for s in summary.stages} <= set(names)
    # each of the workspace's stage runs names its flow run the same way
    assert {(r[0], r[6]) for r in stage_runs} == {(s.stage, f"demo · {s.stage}") for s in summary.stages}


def test_a_nightly_rerun_adds_to_each_keys_history_and_says_what_it_reused(demo):
    """A scheduled run (the deployment's ``pipeline`` flow, a flow run of its own) with nothing new to compute
    still tells the dashboard what it reused; a run from the CLI with nothing to compute starts no flow run."""
    from flows.pipeline_flow import pipeline
    from pipeline.runs import recorded_outcome, run_for_flow_run

    ws, first = demo
    quiet = run(ws)
    assert quiet.status == "completed" and quiet.flow_run_id == "" and quiet.settled_without_prefect
    state = pipeline(workspace=str(ws.root), return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    recorded = run_for_flow_run(ws.store, flow_run_id)
    assert recorded is not None, "the deployment's run is in the workspace's history"
    again = recorded_outcome(ws.store, recorded)
    assert again.status == "completed" and again.stages and all(s.items == 0 for s in again.stages)
    found = artifacts_of(flow_run_id)
    text = found[artifact_key(ws, "summary")].data
    assert [s.stage for s in again.stages] == [s.stage for s in quiet.stages]
    for s in quiet.stages:                        # what each stage has, all reused (the no-op run counted it)
        cells = stage_row(text, s.stage)
        assert cells[1:5] == ["completed", "0", str(s.total), "0"], cells
    assert "unchanged, reused by this run" in found[artifact_key(ws, "evaluation")].description
    for what in ("summary", "evaluation", "caption-metrics", "report"):
        versions = history(artifact_key(ws, what))
        assert [str(a.flow_run_id) for a in versions[:2]] == [flow_run_id, first.flow_run_id], what


def test_keys_tags_and_deployments_of_two_workspaces_with_one_name_differ(tmp_path):
    from flows.naming import nightly_deployment_name, on_demand_deployment_name

    a = make_workspace(tmp_path / "home-a" / "outputs" / "default")
    b = make_workspace(tmp_path / "home-b" / "outputs" / "default")
    assert a.name == b.name == "default"
    assert artifact_key(a, "summary") != artifact_key(b, "summary")
    assert workspace_tag(a) != workspace_tag(b)
    assert nightly_deployment_name(a) != nightly_deployment_name(b)
    assert on_demand_deployment_name(a) != on_demand_deployment_name(b)
    assert artifact_key(a, "evaluation") == artifact_key(Workspace(a.root), "evaluation")   # stable
    odd = make_workspace(tmp_path / "My Photos (2024)")
    key = artifact_key(odd, "failures-caption:knn-consensus")
    assert key.startswith("capsearch-my-photos-2024-") and key.endswith("-failures-caption-knn-consensus")
    assert set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_artifacts_off_leaves_only_the_progress(demo_world, tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    ws = make_workspace(tmp_path / "quiet", data=demo_data(demo_world), orchestration={"artifacts": False})
    summary = run(ws, ["ingest"])
    ids = [summary.flow_run_id, summary.stage("ingest").flow_run_id]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
    assert [(a.type, a.key, str(a.flow_run_id)) for a in found] == [("progress", None, ids[1])]


def test_a_reason_with_a_pipe_or_a_line_break_stays_in_its_cell(tmp_path):
    from flows.run_summary import summary_markdown
    from pipeline.stages.outcome import RunOutcome, StageOutcome

    ws = make_workspace(tmp_path / "ws")
    bad = StageOutcome("caption:x", "caption", "x", status="failed", error="ValueError: a | b\nsecond line")
    text = summary_markdown(ws, RunOutcome("failed", 3.0, [bad], error=bad.error), planned=["caption:x", "report"])
    assert stage_row(text, "caption:x") == ["caption:x", "failed", "0", "0", "0", "0.0 s",
                                             "ValueError: a \\| b second line"]
    assert stage_row(text, "report")[1] == "not started"
    assert "**Failed** in caption:x after 0 of 2 stages (3.0 s)" in text


def test_a_method_with_nothing_to_rank_is_listed_as_not_applicable_with_its_reason():
    from flows.result_tables import evaluation_description, evaluation_rows
    from pipeline.estimates import Estimate
    from pipeline.evaluation import EvaluationResult, MethodResult

    why = "none of the 3 targets has a human caption other than the one its queries were made from"
    result = EvaluationResult(
        eval_hash="e" * 16, queries_hash="q", methods=["knn-consensus"], kinds=["short"], metrics=["R@1", "MedR"],
        baseline=None, n_targets=3, n_queries={"short": 3}, failed_queries=0, missing={"knn-consensus": 0, "oracle": 3},
        skipped={}, results=[MethodResult("knn-consensus", "short", 3, 0, {"R@1": Estimate(1 / 3, 0.0, 1.0),
                                                                            "MedR": Estimate(2.0, 1.0, 3.0)})],
        not_applicable={"oracle": why}, n_boot=1000)
    assert evaluation_rows(result) == [
        {"method": "knn-consensus", "queries": "short (n=3)", "missing targets": "0", "R@1": "0.333 [0.00, 1.00]",
         "MedR": "2.0 [1.0, 3.0]"},
        {"method": "oracle (not applicable)", "queries": "short", "missing targets": "3", "R@1": "n/a", "MedR": "n/a"}]
    assert f"oracle not applicable: {why}" in evaluation_description(result, computed=True)


def test_a_stage_that_asked_a_model_server_says_what_it_cost(tmp_path):
    from flows.run_summary import summary_markdown
    from pipeline.stages.outcome import RunOutcome, StageOutcome, TokenUsage

    ws = make_workspace(tmp_path / "ws")
    caption = StageOutcome("caption:vlm-neighbours", "caption", "vlm-neighbours", status="completed", done=40,
                           items=40, total=40, seconds=10.0,
                           usage=TokenUsage(photos=40, requests=41, prompt_tokens=12345, completion_tokens=890,
                                            cost_usd=0.0021))
    text = summary_markdown(ws, RunOutcome("completed", 12.0, [caption]))
    assert stage_row(text, "caption:vlm-neighbours")[6] == ("model server: 40 photos, 12,345 prompt + 890 completion "
                                                            "tokens, $0.0021; 4.0 photos/s, 1,324 tokens/s")
    assert "Model server requests: 40 photos, 12,345 prompt + 890 completion tokens, $0.0021." in text


# -- a folder collection: evaluation does not apply ------------------------------------------------------------
def test_a_folder_runs_summary_says_why_there_is_no_evaluation(tmp_path, prefect_harness):
    folder = build_photo_folder(tmp_path / "Photos", n=20, n_captioned=12)
    ws = make_workspace(tmp_path / "photos", data={"source": "folder", "path": str(folder.root),
                                                   "captions": str(folder.captions)})
    summary = run(ws)
    assert summary.status == "completed"
    found = artifacts_of(summary.flow_run_id)
    assert set(found) == {artifact_key(ws, "summary")}, "no evaluation, caption metrics or report"
    text = found[artifact_key(ws, "summary")].data
    for stage in ("caption-metrics", "queries", "evaluate", "report"):
        cells = stage_row(text, stage)
        assert cells[1] == "not applicable" and cells[6] == NO_HELD_OUT_CAPTIONS, cells
    assert "**Completed** in " in text and "11 stages: 7 completed, 4 not applicable; 0 items failed." in text
    assert stage_row(text, "caption:knn-consensus")[1] == "completed"


# -- failed items ----------------------------------------------------------------------------------------------
def test_a_corrupt_photo_is_listed_with_its_reason(tmp_path, prefect_harness):
    data = build_flickr8k_like(tmp_path / "flickr", n=24, bad=True)
    ws = make_workspace(tmp_path / "bad", data={"source": "flickr8k", "path": str(data["root"]), "n_targets": 8})
    summary = run(ws, ["ingest"])
    ingest = summary.stage("ingest")
    assert ingest.failed == len(data["bad"])
    found = artifacts_of(summary.flow_run_id)
    key = artifact_key(ws, "failures-ingest")
    rows = table(found[key])
    assert [r["item"] for r in rows] == sorted(data["bad"])
    for r in rows:
        assert data["bad"][r["item"]] in r["reason"].lower(), r
    assert f"ingest: {len(data['bad'])} items failed in this run" in found[key].description
    text = found[artifact_key(ws, "summary")].data
    assert stage_row(text, "ingest")[4] == str(len(data["bad"]))
    assert f"{len(data['bad'])} failed items of ingest: artifact `{key}`" in text

    again = run(ws, ["ingest"])        # nothing new to try: settled before Prefect, no new failures table
    assert again.stage("ingest").failed == 0 and again.settled_without_prefect and again.flow_run_id == ""
    assert len(history(key)) == 1


def test_the_first_failures_and_the_count_of_the_rest():
    from flows.result_tables import FAILURES_SHOWN, failure_rows

    failures = {f"photo_{i:03d}.jpg": f"not an image ({i})" for i in range(FAILURES_SHOWN + 5)}
    rows = failure_rows(failures)
    assert len(rows) == FAILURES_SHOWN + 1
    assert rows[0] == {"item": "photo_000.jpg", "reason": "not an image (0)"}
    assert rows[-1]["item"] == "… and 5 more"
    assert failure_rows({"a.jpg": "empty file"}) == [{"item": "a.jpg", "reason": "empty file"}]


# -- cancelled and crashed runs ----------------------------------------------------------------------------------
@pytest.fixture
def ingested(demo_world, tmp_path, prefect_harness) -> Workspace:
    ws = make_workspace(tmp_path / "rows", data=demo_data(demo_world), orchestration={"batch_size": 8})
    assert run(ws, ["ingest"]).status == "completed"
    return ws


def test_a_cancelled_runs_summary_says_so_and_what_it_did_not_reach(ingested):
    ws = ingested
    cancel = threading.Event()

    def progress(event):
        if event.stage == SlowRowsStage.name and event.kind == "advance" and event.done >= 16:
            cancel.set()

    summary = run(ws, [spec(SlowRowsStage), spec(RowsStage)], progress=progress, cancel=cancel)
    assert summary.status == "cancelled"
    text = artifacts_of(summary.flow_run_id)[artifact_key(ws, "summary")].data
    assert "**Cancelled** after 0 of 2 stages" in text and "Finished batches are kept" in text
    slow = stage_row(text, SlowRowsStage.name)
    assert slow[1] == "cancelled" and int(slow[2]) == len(outputs(ws, SlowRowsStage.name)) >= 16
    assert stage_row(text, RowsStage.name)[1:3] == ["not started", "–"]


def test_a_failed_runs_summary_names_the_stage_and_the_error(ingested, monkeypatch):
    from pipeline.errors import ConfigError
    from pipeline.runs import recent_runs
    from tests.fixtures.flow_stages import ChatStage

    def refuse(self, item):
        raise ConfigError("OPENAI_API_KEY is not set")

    monkeypatch.setattr(ChatStage, "value", refuse)
    ws = ingested
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        run(ws, [spec(ChatStage), spec(RowsStage)])
    failed = recent_runs(ws.store, 1)[0]
    assert failed.status == "failed"
    text = artifacts_of(failed.flow_run_id)[artifact_key(ws, "summary")].data
    assert "**Failed** in chat-test after 0 of 2 stages" in text and "OPENAI_API_KEY is not set" in text
    row = stage_row(text, ChatStage.name)
    assert row[1] == "failed" and "OPENAI_API_KEY is not set" in row[6]
    assert stage_row(text, RowsStage.name)[1] == "not started"


def test_a_killed_run_gets_its_summary_from_the_next_run(ingested, detached_runs, process_tag, tmp_path):
    """SIGKILL leaves no chance to write anything: the next run of the workspace that reaches Prefect (here the
    one that finishes the killed stage; a run with nothing to compute asks no server) marks the killed run's flow
    run Crashed and writes its summary from what the store recorded."""
    from pipeline.runs import recent_runs, run_progress

    ws = ingested
    env = process_tag.env({**os.environ, "PYTHONPATH": str(REPO), "CAPSEARCH_FLOW_THREADS": "1"})
    log = tmp_path / "killed.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "capsearch", "-w", str(ws.root), "run", "-s",
                                 spec(SlowRowsStage)], cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    before = recent_runs(ws.store, 1)[0].id

    def recorded() -> int:     # the killed run's progress as the store recorded it (at a bounded rate)
        runs = [r for r in recent_runs(ws.store, 3) if r.id > before]
        live = run_progress(ws.store, runs[-1].id) if runs else []
        return max((s.done for s in live if s.stage == SlowRowsStage.name), default=0)

    try:
        wait_until(lambda: recorded() >= 16, "two batches recorded", proc=proc, out=log, poll=0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    [killed] = recent_runs(ws.store, 1)
    assert killed.status == "crashed" and killed.flow_run_id
    assert artifact_key(ws, "summary") not in artifacts_of(killed.flow_run_id)

    assert run(ws, [spec(SlowRowsStage)]).status == "completed"
    assert flow_run(killed.flow_run_id).state.type.value == "CRASHED"
    text = artifacts_of(killed.flow_run_id)[artifact_key(ws, "summary")].data
    assert "**Crashed** in slow-rows-test" in text and "ended without finishing" in text
    row = stage_row(text, SlowRowsStage.name)
    assert row[1] == "crashed" and int(row[2]) == recorded() >= 16
