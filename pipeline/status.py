"""What `capsearch status` and the TUI's pipeline screen show: per stage done / missing / failed, or why a
stage does not apply; photos removed from the collection; duplicates kept out of the neighbours' captions.

``workspace_status(ws)`` returns a ``StatusReport``; ``StatusReport.as_dict()`` is what ``status --json``
prints."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import CapsearchError
from pipeline.keys import EXACT_DUPLICATE, NEAR_DUPLICATE
from pipeline.runs import ENDED_BADLY, describe_ended_run, last_heard, recent_runs, run_progress
from pipeline.stage_keys import stage_hash
from pipeline.stages.base import StageCounts
from pipeline.stages.ingest import removed_photos
from pipeline.stages.registry import pipeline_stages
from pipeline.store_rows import Problem, RunInfo, StageLive, StageRunRow
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.vector_index import IndexInfo


@dataclass(frozen=True)
class ImageCounts:
    total: int
    reference: int
    target: int


@dataclass(frozen=True)
class DuplicateCounts:
    identical_photos: int = 0                 # photos with the same sha256 as another, beyond the first copy
    with_exact_duplicate_neighbour: int = 0   # photos whose neighbours list an identical copy of them
    with_near_duplicate_neighbour: int = 0    # ... a near duplicate of them


@dataclass(frozen=True)
class StatusReport:
    workspace: str
    profile: str
    images: ImageCounts
    stages: tuple[StageCounts, ...]            # a stage whose counts could not be read has its error
    problems: tuple[Problem, ...]             # recorded problems, then failures the stages report beyond them
    removed: dict[str, dict[str, Any]]        # photos that left the collection: id -> when, sha256, split
    duplicates: DuplicateCounts
    runs: tuple[StageRunRow, ...]             # the newest stage runs first
    indexes: tuple["IndexInfo", ...] = ()       # approximate indexes and their measured recall@10
    last_run: "LastRun | None" = None         # the newest run, when it crashed, was cancelled or failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "profile": self.profile,
            "images": asdict(self.images),
            "stages": [s.as_dict() for s in self.stages],
            "problems": [p.as_dict() for p in self.problems],
            "removed": self.removed,
            "duplicates": asdict(self.duplicates),
            "runs": [r.as_dict() for r in self.runs],
            "indexes": [i.as_dict() for i in self.indexes],
            "last_run": None if self.last_run is None else self.last_run.as_dict(),
        }


@dataclass(frozen=True)
class LastRun:
    """The workspace's newest run when it ended badly (crashed, cancelled, failed): how far it got, and why."""
    run: RunInfo
    stages: tuple[StageLive, ...]

    @property
    def description(self) -> str:
        return describe_ended_run(self.run, list(self.stages))

    def as_dict(self) -> dict[str, Any]:
        r = self.run
        return {"id": r.id, "status": r.status, "what": r.what, "started_by": r.started_by, "pid": r.pid,
                "host": r.host, "started_at": r.started_at, "ended_at": last_heard(r, list(self.stages)),
                "message": r.message, "log": r.log_path, "description": self.description,
                "stages": [{"stage": s.stage, "state": s.state, "done": s.done, "total": s.total,
                            "failures": s.failures} for s in self.stages]}


def last_run(ws: Workspace) -> LastRun | None:
    """The newest run of the workspace if it crashed, was cancelled or failed (None if it completed or runs)."""
    newest = recent_runs(ws.store, 1)
    if not newest or newest[0].status not in ENDED_BADLY:
        return None
    return LastRun(newest[0], tuple(run_progress(ws.store, newest[0].id)))


def duplicate_counts(ws: Workspace) -> DuplicateCounts:
    """Identical photos in the collection (same sha256, beyond the first copy), and photos whose neighbour list
    holds an exact or a near duplicate of them (listed, but their captions never reach a prompt or the
    consensus), under the current neighbours configuration."""
    store = ws.store
    copies = store.identical_copies()
    try:
        config_hash = stage_hash(ws, "neighbours")
    except CapsearchError:
        return DuplicateCounts(copies)
    by_kind = store.targets_with_duplicate_neighbours(config_hash)
    return DuplicateCounts(copies, by_kind.get(EXACT_DUPLICATE, 0), by_kind.get(NEAR_DUPLICATE, 0))


def workspace_status(ws: Workspace) -> StatusReport:
    from pipeline.vector_index import index_infos

    store = ws.store
    stages = []
    with store.reuse_reads():    # the stages ask for the same captions many times: read each set once
        for stage in pipeline_stages(ws):
            try:
                stages.append(stage.counts())
            except CapsearchError as exc:  # e.g. the data folder is missing: say so instead of failing
                stages.append(StageCounts(stage.label, 0, 0, 0, error=str(exc)))
    problems = list(store.problems())
    for s in stages:
        for item, reason in s.failures.items():
            if not any(p.item == item and p.stage == s.stage for p in problems):
                problems.append(Problem(s.stage, item, "failed", reason))
    return StatusReport(
        workspace=str(ws.root),
        profile=ws.config.profile,
        images=ImageCounts(store.count_images(), store.count_images("reference"), store.count_images("target")),
        stages=tuple(stages),
        problems=tuple(problems),
        removed=removed_photos(store),
        duplicates=duplicate_counts(ws),
        runs=tuple(store.stage_runs(limit=20)),
        indexes=tuple(index_infos(store)),
        last_run=last_run(ws),
    )
