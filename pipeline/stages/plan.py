"""The one stage planner: what a run of a stage computes, for the flows and for ``run_stage`` alike.

A stage that does not apply (``Stage.applicable``) plans nothing and says why. Otherwise the stage is
prepared (``Stage.prepare``: cheap when nothing changed) and its items are planned in batches of every item
(``Stage.plan``), so batch boundaries, and with them the batches' cache keys, stay the same from run to
run; of each batch only the items not settled (done, or failed unless retried) are computed, and a batch
with none left has nothing to compute.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.stages.base import Batch

if TYPE_CHECKING:
    from pipeline.progress import StageProgress
    from pipeline.stages.base import Stage


@dataclass(frozen=True)
class StagePlan:
    config_hash: str = ""
    batches: list[Batch] = field(default_factory=list)   # every item of the stage, in batches
    todo: dict[int, tuple[str, ...]] = field(default_factory=dict)  # batch index -> the ids this run computes
    not_applicable: str | None = None                    # why the stage does not apply (then nothing is planned)

    @property
    def items(self) -> int:
        """Items this run computes."""
        return sum(len(t) for t in self.todo.values())

    @property
    def total(self) -> int:
        """Items the stage has (computed by this run, or reused)."""
        return sum(len(b.ids) for b in self.batches)

    def work(self, batch: Batch) -> Batch | None:
        """The part of ``batch`` this run computes (its content hash kept: the key of the whole batch), or None."""
        todo = self.todo.get(batch.index, ())
        return Batch(batch.index, tuple(todo), batch.content_hash) if todo else None


def plan_stage(stage: "Stage", progress: "StageProgress | None" = None, retry_failed: bool = False) -> StagePlan:
    """Check that the stage applies, prepare it (``progress``: its progress while preparing) and plan its batches."""
    reason = stage.applicable()
    if reason:
        return StagePlan(not_applicable=reason)
    stage.prepare(progress)
    batches = stage.plan(only_missing=False, retry_failed=retry_failed)
    settled = stage.settled_items(retry_failed)
    todo = {b.index: tuple(i for i in b.ids if i not in settled) for b in batches}
    return StagePlan(stage.config_hash(), batches, todo)
