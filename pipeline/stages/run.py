"""``run_stage``: one stage run in this process, without Prefect (the baseline the flows are measured against).

It and the stage flows (``flows.stage_flows.execute_stage``) share the one planner (``pipeline.stages.plan``)
and the one stage-run recorder (``pipeline.stages.record``), so the two paths cannot drift.
"""
from __future__ import annotations

import time

from pipeline.progress import ProgressCallback, StageProgress
from pipeline.stages.base import Stage
from pipeline.stages.outcome import StageOutcome
from pipeline.stages.plan import StagePlan, plan_stage
from pipeline.stages.record import StageRunRecorder
from pipeline.states import Status


def run_stage(stage: Stage, progress: ProgressCallback | None = None, *, retry_failed: bool = False,
              plan: StagePlan | None = None, run_id: int | None = None) -> StageOutcome:
    """Run a stage in this process without Prefect (the baseline the flows are measured against, and how a run
    settles a stage with nothing to compute before Prefect starts: ``flows.plan``).

    The same planner (``pipeline.stages.plan``) and stage-run recorder (``pipeline.stages.record``) as the
    stage flows, one batch after another; a batch with nothing to compute counts as ``unchanged``. ``plan``:
    the stage's plan when the caller made it already; ``run_id``: the workspace run the stage run belongs to."""
    t0 = time.perf_counter()
    outcome = StageOutcome.of(stage)
    recorder = StageRunRecorder(stage, run_id=run_id)
    prep = StageProgress(stage.label, 0, progress) if plan is None else None
    if plan is None:
        plan = plan_stage(stage, prep, retry_failed)
    if plan.not_applicable:
        recorder.not_applicable(plan.not_applicable)
        (prep or StageProgress(stage.label, 0, progress)).not_applicable(plan.not_applicable)
        outcome.not_applicable(plan.not_applicable)
        outcome.seconds = time.perf_counter() - t0
        return outcome
    outcome.planned(plan)
    sp = StageProgress(stage.label, plan.items, progress)
    recorder.start(plan.config_hash)
    try:
        for batch in plan.batches:
            work = plan.work(batch)
            if work is None:
                outcome.unchanged += 1
                continue
            outcome.add_result(stage.run_batch(work, sp))
        stage.finalize(sp)
        outcome.status = Status.COMPLETED
    except BaseException as exc:
        outcome.interrupted(exc, cancelled=isinstance(exc, KeyboardInterrupt))
        raise
    finally:
        outcome.seconds = time.perf_counter() - t0
        recorder.finish(outcome)
    sp.finish(outcome.finish_message())
    return outcome
