"""What a run computes, decided before any Prefect machinery starts.

A run's stages are planned in pipeline order, each after the one before has settled (a stage's plan reads
what the stages before it wrote). A stage with nothing to compute (every item done, or failed and not
retried, or the stage not applicable) is settled here, in this process and without Prefect: the same
planner and stage-run recorder as a stage flow (``pipeline.stages.run.run_stage`` with the plan made here),
its batches counted ``unchanged``, its ``finalize`` run (cheap when nothing changed). At the first stage that
has work, the rest of the run goes to Prefect (``flows.api``: the ``pipeline`` flow runs the stages not
settled here). A run with nothing to compute starts no Prefect server and imports no Prefect, torch or model
library: planning reads the store and the configuration only (``Stage.plan`` loads no model; a model loads
in the first batch that needs it).

Nothing here imports Prefect.
"""
from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.stages.registry import STAGE_ORDER, pipeline_stages
from pipeline.stages.plan import plan_stage
from pipeline.stages.run import run_stage

from flows.run_context import RunContext


def stage_plan(ctx: RunContext, names: list[str] | None, captioners: list[str] | None) -> list[tuple[str, str]]:
    """(stage name, variant) in run order; registered stages in pipeline order, then ``module:Class`` stages."""
    registered = [n for n in (names or []) if ":" not in n]
    custom = [n for n in (names or []) if ":" in n]
    unknown = [n for n in registered if n not in STAGE_ORDER]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGE_ORDER)}")
    plan: list[tuple[str, str]] = []
    if registered or names is None:
        for st in pipeline_stages(ctx.ws, registered or None, captioners):
            ctx.stages.setdefault((st.name, st.variant), st)
            plan.append((st.name, st.variant))
    plan.extend((n, "") for n in custom)
    return plan


def settle_unchanged(ctx: RunContext, plan: list[tuple[str, str]], retry_failed: bool = False) -> list[tuple[str, str]]:
    """Settle the stages of ``plan`` that have nothing to compute, in order, up to the first that has work;
    returns the stages left to run (from that one on; none when the whole run had nothing to compute).

    Each settled stage's ``StageOutcome`` is appended to ``ctx.outcomes`` and its stage run recorded."""
    for n, (name, variant) in enumerate(plan):
        if ctx.cancel.is_set():
            return plan[n:]
        st = ctx.stage(name, variant)
        preparing = ctx.tracker(st.label, 0)
        stage_plan_ = plan_stage(st, preparing, retry_failed)
        if stage_plan_.items and not stage_plan_.not_applicable:
            return plan[n:]
        outcome = run_stage(st, preparing.callback, retry_failed=retry_failed, plan=stage_plan_, run_id=ctx.run_id)
        ctx.outcomes.append(outcome)
        if ctx.recorder is not None and outcome.batches:
            ctx.recorder.batches(st.label, outcome.batches, outcome.batches)
    return []


def settled_labels(ctx: RunContext) -> set[str]:
    """The stages this run has settled already (here, before Prefect started)."""
    return {o.stage for o in ctx.outcomes}
