"""Prefect artifacts: the story of a run where people look, in the Prefect UI.

* **Progress**: each stage run's progress artifact (no key: it belongs to its stage flow run and does not
  crowd the Artifacts page), updated at most once a second and at the end.
* **Results**, once per stage run (never per batch; the progress covers the batches), attached to the run's
  ``pipeline`` flow run, so its Artifacts tab tells the whole run: the evaluation table (``evaluate``), the
  caption-metrics table (``caption-metrics``), a link to the HTML report (``report``), and for a stage with
  failed items the first failures (item, reason) and the count of the rest.
* **Summary**, once per run: how the run ended (completed, failed, cancelled; a crashed run's by the next run
  of the workspace, ``flows.runtime.crashed_runs``), its workspace and profile, and per stage what it computed,
  reused and failed, its time, or why it does not apply (``flows.run_summary``).

Keys are stable per workspace (``flows.naming.artifact_key``: ``capsearch-<workspace id>-summary``,
``-evaluation``, ``-caption-metrics``, ``-report``, ``-failures-<stage>``), so the Artifacts page shows the
latest of each with its history. ``orchestration.artifacts = false`` writes none of the results and
summaries (the progress stays). An artifact that cannot be written costs a warning in the log, never the run.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from uuid import UUID

from prefect.artifacts import LinkArtifact, MarkdownArtifact, TableArtifact, create_progress_artifact, update_progress_artifact

from flows import result_tables, run_summary
from flows.runtime.prefect_api import sync
from pipeline.errors import one_line
from pipeline.states import Status

if TYPE_CHECKING:
    from pipeline.stages.base import Stage
    from pipeline.stages.outcome import RunOutcome, StageOutcome
    from pipeline.stages.plan import StagePlan
    from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

MIN_INTERVAL = 1.0   # seconds between progress updates (each one is an API call)


class ProgressArtifact:
    """Creates the artifact at 0 % and updates it at most once a second, and at the end."""

    def __init__(self, label: str, total: int):
        self.label = label
        self.total = total
        self._last = 0.0
        self._id: UUID | None = None
        try:
            self._id = create_progress_artifact(0.0 if total else 100.0, description=self._describe(0, 0))
        except Exception:  # noqa: BLE001 - the UI's progress never fails a run
            self._id = None

    def _describe(self, done: int, failed: int) -> str:
        tail = f", {failed} failed" if failed else ""
        return f"{self.label}: {done} of {self.total} items{tail}"

    def update(self, done: int, failed: int = 0, final: bool = False, total: int | None = None) -> None:
        """``total``: the stage's total now, where it counts in finer units than items (``StageProgress.add_work``)."""
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self._id is None or (not final and now - self._last < MIN_INTERVAL):
            return
        self._last = now
        pct = 100.0 if final or not self.total else min(100.0, 100.0 * done / self.total)
        try:
            update_progress_artifact(self._id, pct, description=self._describe(done, failed))
        except Exception:  # noqa: BLE001
            pass


# -- writing -------------------------------------------------------------------------------------------------
def enabled(ws: "Workspace") -> bool:
    return bool(ws.config.orchestration.artifacts)


def _create(artifact: Any, flow_run_id: str | None) -> bool:
    """Create one artifact, attached to ``flow_run_id`` (else to the flow run in context); False if it failed."""
    if flow_run_id:
        artifact.flow_run_id = UUID(str(flow_run_id))
    try:
        sync(artifact.create)
        return True
    except Exception as exc:  # noqa: BLE001 - the dashboard's view never fails a run
        log.warning("could not write the Prefect artifact %s: %s", artifact.key, one_line(exc))
        return False


def markdown(key: str, text: str, description: str, flow_run_id: str | None = None) -> bool:
    return _create(MarkdownArtifact(key=key, markdown=text, description=description), flow_run_id)


def table(key: str, rows: list[dict[str, str]], description: str, flow_run_id: str | None = None) -> bool:
    return _create(TableArtifact(key=key, table=rows, description=description), flow_run_id)


def link(key: str, target: Path, text: str, description: str, flow_run_id: str | None = None) -> bool:
    return _create(LinkArtifact(key=key, link=target.as_uri(), link_text=text, description=description), flow_run_id)


# -- per stage run ---------------------------------------------------------------------------------------------
def report_html(st: "Stage") -> Path | None:
    """The HTML report the report stage made for its current configuration (None before it made one)."""
    meta = st.store.get_meta(f"report/{st.config_hash()}") or {}
    return Path(meta["html"]) if meta.get("html") else None


def publish_stage(st: "Stage", outcome: "StageOutcome", plan: "StagePlan | None", flow_run_id: str | None) -> int:
    """A stage run's result artifacts, once, as the stage ends (see the module); returns how many were written.
    Never raises: it runs as the stage ends, however it ends."""
    if not enabled(st.ws):
        return 0
    try:
        return _publish_stage(st, outcome, plan, flow_run_id)
    except Exception as exc:  # noqa: BLE001 - reading the results for the dashboard never fails the stage
        log.warning("could not write the Prefect artifacts of %s: %s", st.label, one_line(exc))
        return 0


def _publish_stage(st: "Stage", outcome: "StageOutcome", plan: "StagePlan | None", flow_run_id: str | None) -> int:
    ws = st.ws
    written = 0
    if outcome.failed and plan is not None:
        attempted = {i for ids in plan.todo.values() for i in ids}
        failures = {i: r for i, r in st.failed_items().items() if i in attempted}
        if failures:
            shown = min(len(failures), result_tables.FAILURES_SHOWN)
            rest = len(failures) - shown
            description = (f"{st.label}: {len(failures)} item{'' if len(failures) == 1 else 's'} failed in this run"
                           + (f"; the first {shown} by name, and {rest} more" if rest else "")
                           + " (`capsearch status` lists them; `capsearch run --retry-failed` tries them again)")
            written += table(run_summary.failures_key(ws, st.label), result_tables.failure_rows(failures), description,
                             flow_run_id)
    if outcome.status != Status.COMPLETED or st.name not in run_summary.RESULT_STAGES:
        return written
    computed = outcome.done > 0
    key = run_summary.result_key(ws, st.name)
    if st.name == "evaluate":
        from pipeline.evaluation import load_evaluation

        result = load_evaluation(ws, st.config_hash())
        if result is not None:
            written += table(key, result_tables.evaluation_rows(result),
                             result_tables.evaluation_description(result, computed), flow_run_id)
    elif st.name == "caption-metrics":
        from pipeline.caption_metrics.storage import load_caption_metrics

        summary = load_caption_metrics(ws, st.config_hash())
        if summary is not None:
            written += table(key, result_tables.caption_metric_rows(summary),
                             result_tables.caption_metrics_description(summary, computed), flow_run_id)
    elif st.name == "report":
        html = report_html(st)
        if html is not None:
            written += link(key, html, str(html),
                            f"The HTML report of {ws.name}: {html} (open it in a browser on the machine that ran "
                            f"capsearch; `capsearch report` prints its files). "
                            f"{'Written by this run' if computed else 'Unchanged, kept by this run'}.", flow_run_id)
    return written


# -- per run ----------------------------------------------------------------------------------------------------
def publish_summary(ws: "Workspace", outcome: "RunOutcome", flow_run_id: str | None = None, *,
                    planned: Sequence[str] = (), requested: Sequence[str] | None = None, started_by: str = "",
                    report: Path | None = None) -> bool:
    """The run's markdown summary (``flows.run_summary``), attached to its pipeline flow run."""
    if not enabled(ws):
        return False
    text = run_summary.summary_markdown(ws, outcome, planned=planned, requested=requested, started_by=started_by,
                                        report=str(report) if report else None)
    return markdown(run_summary.summary_key(ws), text, run_summary.summary_description(ws, outcome), flow_run_id)
