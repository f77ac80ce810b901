"""Typed messages that workers post to the screens (workers never touch widgets)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

from pipeline.browse import EvaluationTable, MissedQuery, PhotoDetail, PhotoSummary
from pipeline.progress import ProgressEvent
from pipeline.stages.outcome import RunOutcome

if TYPE_CHECKING:
    from flows.runtime.detach import Detached
    from flows.runtime.prefect_runs import RecentFlowRuns
    from pipeline.caption_metrics.views import CaptionMetricsView
    from pipeline.runs import RunInfo
    from pipeline.search_service import Hit
    from pipeline.status import StatusReport
    from pipeline.store_rows import StageRunRow


# -- pipeline ------------------------------------------------------------------------------------------
class StatusLoaded(Message):
    """Per-stage counts and problems from ``workspace_status``."""

    def __init__(self, status: StatusReport) -> None:
        super().__init__()
        self.status = status


@dataclass(frozen=True)
class RunRequest:
    """What the user asked to run."""

    stages: tuple[str, ...] | None = None       # None: the whole pipeline
    captioners: tuple[str, ...] | None = None   # None: the enabled captioners
    retry_failed: bool = False

    def describe(self) -> str:
        what = "the whole pipeline" if self.stages is None else ", ".join(self.stages)
        if self.captioners:
            what += f" for {', '.join(self.captioners)}"
        return what + (" (retrying failed items)" if self.retry_failed else "")


class RunStarted(Message):
    """This TUI asked for a run (it starts outside the TUI: ``flows.runtime.detach``)."""

    def __init__(self, request: RunRequest) -> None:
        super().__init__()
        self.request = request


class RunLaunched(Message):
    """The run this TUI asked for has started outside it (``flows.runtime.detach``)."""

    def __init__(self, request: RunRequest, detached: Detached) -> None:
        super().__init__()
        self.request = request
        self.detached = detached


class RunSeen(Message):
    """A run is going on in the workspace, whoever started it."""

    def __init__(self, run: RunInfo) -> None:
        super().__init__()
        self.run = run


class StageProgressed(Message):
    """One progress event of a running stage.

    Consecutive ``advance`` events of the same stage supersede each other (the event carries the
    cumulative counts), so a fast stage cannot flood the screen's message queue.
    """

    def __init__(self, event: ProgressEvent) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return (isinstance(message, StageProgressed) and self.event.kind == "advance"
                and message.event.kind == "advance" and message.event.stage == self.event.stage)


class RunFinished(Message):
    """The run ended: ``outcome.status`` is 'completed', 'cancelled', 'failed' or 'crashed'."""

    def __init__(self, outcome: RunOutcome) -> None:
        super().__init__()
        self.outcome = outcome


class CancelSent(Message):
    """What ``x`` did: the run was asked to stop (a failure to ask goes the way of every worker's failure)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


# -- captions ----------------------------------------------------------------------------------------------
class PhotosLoaded(Message):
    def __init__(self, photos: list[PhotoSummary]) -> None:
        super().__init__()
        self.photos = photos


class PhotoLoaded(Message):
    def __init__(self, detail: PhotoDetail) -> None:
        super().__init__()
        self.detail = detail


# -- search ------------------------------------------------------------------------------------------------
class SearchReady(Message):
    """The search index is loaded: its methods, how many photos, the evaluation queries (query, kind, photo)."""

    def __init__(self, methods: list[str], n_photos: int,
                 examples: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__()
        self.methods = methods
        self.n_photos = n_photos
        self.examples = examples or []


@dataclass(frozen=True)
class TruePhoto:
    """Where the true photo of an evaluation query ranked."""

    image_id: str
    kind: str
    rank: float


class SearchResults(Message):
    def __init__(self, query: str, method: str, hits: list[Hit], seconds: float,
                 truth: list[TruePhoto] | None = None) -> None:
        super().__init__()
        self.query = query
        self.method = method
        self.hits = hits
        self.seconds = seconds
        self.truth = truth or []


class OpenInSearch(Message):
    """Ask the app to show a query in the Search screen (in ``scope``: the evaluation's drill-down asks for the
    targets, where its ranks were measured)."""

    def __init__(self, query: str, method: str, scope: str | None = None) -> None:
        super().__init__()
        self.query = query
        self.method = method
        self.scope = scope


class OpenLike(Message):
    """Ask the app to show the photos most like ``image_id`` in the Search screen."""

    def __init__(self, image_id: str) -> None:
        super().__init__()
        self.image_id = image_id


# -- evaluation --------------------------------------------------------------------------------------------
class EvaluationLoaded(Message):
    def __init__(self, table: EvaluationTable) -> None:
        super().__init__()
        self.table = table


class MissedLoaded(Message):
    def __init__(self, method: str, kind: str, k: int, missed: list[MissedQuery]) -> None:
        super().__init__()
        self.method = method
        self.kind = kind
        self.k = k
        self.missed = missed


# -- runs --------------------------------------------------------------------------------------------------
class FlowRunsLoaded(Message):
    """The recent Prefect flow runs, from the server when one is configured, else from the local database."""

    def __init__(self, flow_runs: RecentFlowRuns) -> None:
        super().__init__()
        self.flow_runs = flow_runs


class StageRunsLoaded(Message):
    """This workspace's recent stage runs, newest first."""

    def __init__(self, stage_runs: list[StageRunRow]) -> None:
        super().__init__()
        self.stage_runs = stage_runs


# -- caption metrics ----------------------------------------------------------------------------------------
class CaptionMetricsLoaded(Message):
    """The caption-metrics summary and per-photo scores (``pipeline.caption_metrics.views``)."""

    def __init__(self, view: CaptionMetricsView) -> None:
        super().__init__()
        self.view = view
