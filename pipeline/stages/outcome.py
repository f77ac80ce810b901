"""What a run did, typed: one ``StageOutcome`` per stage, and the ``RunOutcome`` that holds them.

The runners fill them directly (``flows.stage_flows.execute_stage`` per stage flow, ``run_stage`` in this
process), ``flows.api.run`` returns the ``RunOutcome``, and every reader takes them as they are: the CLI's
run summary, the TUI (``RunFinished`` carries one, rebuilt from the store's record of the run when the run
went on in another process) and ``--json`` (``as_dict()``). No other shape of a run's result exists.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import DiskFullError, reason as error_reason
from pipeline.states import Status
from pipeline.usage import TokenUsage

if TYPE_CHECKING:
    from pipeline.stages.base import BatchResult, Stage
    from pipeline.stages.plan import StagePlan

MESSAGES_KEPT = 200          # a stage's messages kept in its outcome (the store's problems list has them all)


@dataclass
class StageOutcome:
    """One stage of a run: how its batches were answered, how many items it computed, reused and failed."""
    stage: str                 # label, e.g. "caption:knn-consensus"
    name: str                  # the stage's name, e.g. "caption"
    variant: str = ""          # the captioner (or 'human') of a per-captioner stage
    config_hash: str = ""
    status: Status = Status.RUNNING     # running, then completed, failed, cancelled or not applicable
    batches: int = 0           # batches planned (every item of the stage)
    cached: int = 0            # batches answered from the Prefect cache
    ran: int = 0               # batches that computed something
    unchanged: int = 0         # batches with nothing to compute and no cache record
    items: int = 0             # items this run had to compute
    total: int = 0             # items the stage has: those computed (items) and those reused (done before)
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)
    error: str = ""
    reason: str = ""           # why the stage does not apply (status not applicable)
    flow_run_id: str = ""
    usage: TokenUsage | None = None   # a stage that asks a model server (an endpoint captioner): what it cost

    @classmethod
    def of(cls, stage: "Stage", flow_run_id: str = "") -> "StageOutcome":
        return cls(stage.label, stage.name, stage.variant, flow_run_id=flow_run_id)

    @property
    def reused(self) -> int:
        return max(0, self.total - self.items)

    @property
    def settled_batches(self) -> int:
        """Batches this run has settled: computed, answered from the cache, or with nothing to compute."""
        return self.ran + self.cached + self.unchanged

    def not_applicable(self, reason: str) -> None:
        self.status, self.reason = Status.NOT_APPLICABLE, reason

    def planned(self, plan: "StagePlan") -> None:
        self.config_hash, self.batches, self.items, self.total = plan.config_hash, len(plan.batches), plan.items, plan.total

    def add(self, done: int = 0, failed: int = 0, skipped: int = 0, messages: list[str] | None = None,
            usage: TokenUsage | None = None) -> None:
        """A batch that computed something."""
        self.ran += 1
        self.done += done
        self.failed += failed
        self.skipped += skipped
        self.messages.extend((messages or [])[: max(0, MESSAGES_KEPT - len(self.messages))])
        if usage is not None:
            if self.usage is None:
                self.usage = TokenUsage()
            self.usage.add(usage)

    def add_result(self, result: "BatchResult") -> None:
        self.add(result.done, result.failed, result.skipped, [str(m) for m in result.messages], result.usage)

    def interrupted(self, exc: BaseException, cancelled: bool) -> None:
        """An exception ends the stage: ``cancelled`` (a stop signal) or failed, unless it says so already."""
        if self.status not in (Status.FAILED, Status.CANCELLED):
            self.status = Status.CANCELLED if cancelled else Status.FAILED
            self.error = self.error or (self.stopped_by_full_disk(exc) if isinstance(exc, DiskFullError)
                                        else error_reason(exc))

    def stopped_by_full_disk(self, exc: DiskFullError) -> str:
        """What the stage run records when a full disk stopped it, whichever path ran it (a stage flow, or a
        stage settled before Prefect whose ``finalize`` rewrites a snapshot)."""
        return f"stopped by a full disk after {self.settled_batches} of {self.batches} batches: {error_reason(exc)}"

    def finish_message(self, with_cache: bool = False) -> str:
        """The stage's last progress line: ``ingest: 10 done, 0 failed, 3 reused (1 of 2 batches cached)``."""
        text = f"{self.stage}: {self.done} done, {self.failed} failed, {self.reused} reused"
        text += f" ({self.cached} of {self.batches} batches cached)" if with_cache else ""
        return text + (f"; {self.usage.describe(self.seconds)}" if self.usage is not None else "")

    def as_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "reused": self.reused}
        out["usage"] = None if self.usage is None else self.usage.as_dict(self.seconds)
        return out


@dataclass
class RunOutcome:
    """One run of some stages of a workspace."""
    status: Status             # completed, failed, cancelled or crashed (a run of another process)
    seconds: float = 0.0
    stages: list[StageOutcome] = field(default_factory=list)
    flow_run_id: str = ""
    runner: str = "thread"
    error: str = ""
    run_id: int | None = None  # the workspace run in the store (pipeline.runs)

    @property
    def settled_without_prefect(self) -> bool:
        """Every stage had nothing to compute: the run ended before any Prefect machinery started
        (``flows.plan``), so it has no flow run."""
        return self.status == Status.COMPLETED and not self.flow_run_id and self.ran_batches == 0

    @property
    def cached_batches(self) -> int:
        return sum(s.cached for s in self.stages)

    @property
    def ran_batches(self) -> int:
        return sum(s.ran for s in self.stages)

    @property
    def reused_batches(self) -> int:
        """Batches with nothing to compute: answered from the cache or unchanged."""
        return sum(s.cached + s.unchanged for s in self.stages)

    @property
    def batches(self) -> int:
        return sum(s.batches for s in self.stages)

    @property
    def failed_items(self) -> int:
        return sum(s.failed for s in self.stages)

    def stage(self, label: str) -> StageOutcome:
        for s in self.stages:
            if s.stage == label:
                return s
        raise KeyError(label)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "seconds": self.seconds, "flow_run_id": self.flow_run_id,
                "runner": self.runner, "error": self.error, "run_id": self.run_id,
                "batches": self.batches, "cached_batches": self.cached_batches, "ran_batches": self.ran_batches,
                "failed_items": self.failed_items, "stages": [s.as_dict() for s in self.stages]}
