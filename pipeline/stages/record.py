"""The one stage-run recorder: a stage run's start, finish and abandonment in the store, for every runner.

``flows.stage_flows.execute_stage`` and ``run_stage`` record through it, so the history (``stage_runs``) says
the same whichever ran the stage: the configuration a run computed under, the workspace run and flow run it
belongs to, how it ended (completed, failed, cancelled, abandoned on a second stop signal, or not
applicable with the reason), its counts and, for a stage that asks a model server, what that cost. Each item's input fingerprints are recorded with the item's
outputs, inside the batch's transaction, by ``Stage.record_inputs``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.stages.outcome import StageOutcome
from pipeline.states import Status

if TYPE_CHECKING:
    from pipeline.stages.base import Stage

MESSAGE_CHARS = 500


class StageRunRecorder:
    """Records one run of ``stage``; ``flow_run_id`` and ``run_id`` (the workspace run) where there are ones."""

    def __init__(self, stage: "Stage", flow_run_id: str = "", run_id: int | None = None):
        self.stage = stage
        self.flow_run_id = flow_run_id
        self.run_id = run_id
        self.stage_run_id: int | None = None

    def _start(self, config_hash: str, config: dict) -> int:
        st = self.stage
        return st.store.start_stage_run(st.name, config_hash, config, st.variant, flow_run_id=self.flow_run_id or None,
                                        run_id=self.run_id)

    def not_applicable(self, reason: str) -> None:
        """A stage run that did not apply: recorded with its reason, so the history says why nothing ran."""
        stage_run_id = self._start("", {})
        self.stage.store.finish_stage_run(stage_run_id, Status.NOT_APPLICABLE, message=reason[:MESSAGE_CHARS])

    def start(self, config_hash: str) -> int:
        self.stage_run_id = self._start(config_hash, self.stage.config())
        return self.stage_run_id

    def finish(self, outcome: StageOutcome) -> None:
        """Its end as ``outcome`` says (status, counts, the first error), once it has started."""
        if self.stage_run_id is not None:
            self.stage.store.finish_stage_run(self.stage_run_id, outcome.status, outcome.done, outcome.failed,
                                              outcome.skipped, (outcome.error or None) and outcome.error[:MESSAGE_CHARS],
                                              None if outcome.usage is None else outcome.usage.as_dict(outcome.seconds))

    def abandon(self, outcome: StageOutcome, message: str, status: Status = Status.CANCELLED) -> None:
        """The batches in flight are abandoned (a second stop signal: ``cancelled``; the Prefect server's death:
        ``failed``): the stage run says so, with ``message``, before the process exits."""
        if self.stage_run_id is not None:
            self.stage.store.finish_stage_run(self.stage_run_id, status, outcome.done, outcome.failed,
                                              outcome.skipped, message[:MESSAGE_CHARS],
                                              None if outcome.usage is None else outcome.usage.as_dict())
