"""Messages more than one part of the app posts or handles: a run's progress (``tui.live.RunFollower`` posts them
to the Pipeline screen), requests to the app to open the Search screen, and the caption metrics (read by the
Captions and Evaluation screens). A message that one screen's workers post to that screen lives in the screen's
module, next to its handler.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

from pipeline.progress import ProgressEvent
from pipeline.stages.outcome import RunOutcome

if TYPE_CHECKING:
    from pipeline.caption_metrics.views import CaptionMetricsView
    from pipeline.runs import RunInfo


# -- a run going on in the workspace (tui.live) ------------------------------------------------------------
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


# -- requests to the app ---------------------------------------------------------------------------------
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


# -- caption metrics (Captions and Evaluation screens) ----------------------------------------------------
class CaptionMetricsLoaded(Message):
    """The caption-metrics summary and per-photo scores (``pipeline.caption_metrics.views``)."""

    def __init__(self, view: CaptionMetricsView) -> None:
        super().__init__()
        self.view = view
