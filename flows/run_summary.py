"""The markdown summary of a run, as the Prefect UI shows it (``flows.artifacts`` writes it).

Made from the one typed shape of a run, ``RunOutcome`` (its ``StageOutcome``s), whether the run completed,
failed, was cancelled, or crashed (then rebuilt from the store by the next run: ``pipeline.runs.recorded_outcome``):
how the run ended and why, the workspace and its profile, and per stage its status, the items it computed,
reused and failed, its time, what its requests to a model server cost (tokens, price, rate: an endpoint
captioner) and, for a stage that does not apply, the reason; then where the results are (the
other artifacts' keys, the report's path). A plain function of its inputs: tested without Prefect.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from flows.naming import artifact_key, pipeline_run_name
from pipeline.runs import ago
from pipeline.stages.outcome import StageOutcome, TokenUsage
from pipeline.states import Status

if TYPE_CHECKING:
    from pipeline.stages.outcome import RunOutcome
    from pipeline.workspace import Workspace

NOTE_CHARS = 240
RESULT_STAGES = {"evaluate": "evaluation", "caption-metrics": "caption-metrics", "report": "report"}


def failures_key(ws: "Workspace", label: str) -> str:
    """The key of a stage's failures table: ``capsearch-<workspace id>-failures-caption-knn-consensus``."""
    return artifact_key(ws, f"failures-{label}")


def result_key(ws: "Workspace", stage: str) -> str:
    """The key of a result stage's artifact (``evaluate``: ``capsearch-<id>-evaluation``)."""
    return artifact_key(ws, RESULT_STAGES[stage])


def summary_key(ws: "Workspace") -> str:
    return artifact_key(ws, "summary")


def seconds_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else ago(seconds)


def cell(text: str) -> str:
    """Text for one cell of a markdown table: one line, no column breaks, not too long."""
    one = " ".join(str(text).split()).replace("|", "\\|")
    return one if len(one) <= NOTE_CHARS else one[: NOTE_CHARS - 1] + "…"


def _stage_line(s: StageOutcome) -> str:
    if s.status == Status.NOT_APPLICABLE:
        return f"| {s.stage} | not applicable | – | – | – | {seconds_text(s.seconds)} | {cell(s.reason)} |"
    if s.status == Status.NOT_STARTED:
        return f"| {s.stage} | not started | – | – | – | – | |"
    note = s.error
    if s.skipped:
        note = f"{s.skipped} skipped" + (f"; {note}" if note else "")
    if s.usage is not None:      # a stage that asked a model server (an endpoint captioner): what it cost
        note = f"model server: {s.usage.describe(s.seconds)}" + (f"; {note}" if note else "")
    if not s.batches and s.status == Status.COMPLETED:
        note = note or "nothing to do"
    return (f"| {s.stage} | {s.status} | {s.done} | {s.reused} | {s.failed} | {seconds_text(s.seconds)} | "
            f"{cell(note)} |")


def _headline(outcome: "RunOutcome", stages: Sequence[StageOutcome]) -> str:
    ran = [s for s in stages if s.status != Status.NOT_STARTED]
    finished = sum(s.status in (Status.COMPLETED, Status.NOT_APPLICABLE) for s in ran)
    if outcome.status == Status.COMPLETED:
        return f"**Completed** in {seconds_text(outcome.seconds)}."
    if outcome.status == Status.CANCELLED:
        return (f"**Cancelled** after {finished} of {len(stages)} stages ({seconds_text(outcome.seconds)}): "
                f"{cell(outcome.error or 'stopped between batches')}. Finished batches are kept: the next run "
                "computes only the rest.")
    if outcome.status == Status.CRASHED:
        where = next((s.stage for s in reversed(ran) if s.status != Status.COMPLETED), ran[-1].stage if ran else "")
        return (f"**Crashed**{f' in {where}' if where else ''} after {finished} of {len(stages)} stages: "
                f"{cell(outcome.error or 'its capsearch process ended without finishing the run (killed?)')}. "
                "Committed batches are kept: the next run computes only the rest.")
    failed = next((s for s in ran if s.status == Status.FAILED), None)
    where = f" in {failed.stage}" if failed is not None else ""
    return (f"**Failed**{where} after {finished} of {len(stages)} stages ({seconds_text(outcome.seconds)}): "
            f"{cell(outcome.error or (failed.error if failed else '') or 'see the stage flow run')}. "
            "Finished batches are kept: `capsearch run` again goes on from there.")


def _results(ws: "Workspace", stages: Sequence[StageOutcome], report: str | None) -> list[str]:
    lines = []
    done = {s.name for s in stages if s.status == Status.COMPLETED}
    if "evaluate" in done:
        lines.append(f"- evaluation (Recall@K, MRR, MedR): artifact `{result_key(ws, 'evaluate')}`")
    if "caption-metrics" in done:
        lines.append(f"- caption metrics: artifact `{result_key(ws, 'caption-metrics')}`")
    if "report" in done and report:
        lines.append(f"- report: `{report}` (artifact `{result_key(ws, 'report')}`)")
    for s in stages:
        if s.failed:
            lines.append(f"- {s.failed} failed item{'' if s.failed == 1 else 's'} of {s.stage}: artifact "
                         f"`{failures_key(ws, s.stage)}`")
    return lines


def _counts(stages: Sequence[StageOutcome]) -> str:
    """``11 stages: 7 completed, 4 not applicable; 3 items failed.`` (computed and reused are counted per stage,
    in each stage's own items: photos, captions, method/kind pairs.)"""
    by_status: dict[str, int] = {}
    for s in stages:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    failed = sum(s.failed for s in stages)
    text = (f"{len(stages)} stage{'' if len(stages) == 1 else 's'}: "
            + ", ".join(f"{n} {status}" for status, n in by_status.items())
            + f"; {failed} item{'' if failed == 1 else 's'} failed.")
    used = [s.usage for s in stages if s.usage is not None]
    if used:
        total = TokenUsage()
        for u in used:
            total.add(u)
        text += f" Model server requests: {total.describe()}."
    return text


def summary_markdown(ws: "Workspace", outcome: "RunOutcome", *, planned: Sequence[str] = (),
                     requested: Sequence[str] | None = None, started_by: str = "", report: str | None = None) -> str:
    """The run's story in markdown. ``planned``: the labels of the stages the run meant to run (those it did not
    reach are listed as not started); ``requested``: the stages asked for (None: all); ``report``: the HTML
    report's path when the report stage completed."""
    stages: list[StageOutcome] = list(outcome.stages)
    seen = {s.stage for s in stages}
    if outcome.status != Status.COMPLETED:
        for label in planned:
            if label not in seen:
                name, _, variant = label.partition(":")
                stages.append(StageOutcome(label, name, variant, status=Status.NOT_STARTED))
    lines = [f"# {pipeline_run_name(ws, requested)}", "", _headline(outcome, stages), ""]
    facts = [f"**workspace** `{ws.name}` (`{ws.root}`)", f"**profile** {ws.config.profile}",
             f"**runner** {outcome.runner}"]
    if started_by:
        facts.append(f"**started by** {cell(started_by)}")
    lines += [" · ".join(facts), ""]
    lines += [_counts(stages), ""]
    lines += ["| stage | status | computed | reused | failed | time | note |",
              "|---|---|--:|--:|--:|--:|---|"]
    lines += [_stage_line(s) for s in stages]
    results = _results(ws, stages, report)
    if results:
        lines += ["", "**Results**", "", *results]
    return "\n".join(lines) + "\n"


def summary_description(ws: "Workspace", outcome: "RunOutcome") -> str:
    return (f"capsearch run of {ws.name} ({ws.root}): {outcome.status}, {len(outcome.stages)} stages, "
            f"{seconds_text(outcome.seconds)}")
