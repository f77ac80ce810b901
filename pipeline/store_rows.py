"""The rows the workspace store returns (``pipeline.store.Store``): frozen dataclasses, one per table, so
every layer (stages, services, the CLI, the TUI) reads attributes instead of guessing dict keys.

The store owns the SQL; these types are what crosses the boundary. ``as_dict()``, where a row has one, is
the row as ``--json`` prints it (the table's columns, in the table's order).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.estimates import Difference, Estimate
from pipeline.progress import EventKind, ProgressEvent
from pipeline.states import Status


@dataclass(frozen=True)
class ImageRow:
    id: str
    path: str
    sha256: str
    width: int
    height: int
    split: str | None
    official_split: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class FileRecord:
    """What ingest recorded about a photo's file: its size and mtime then, its content hash, and the hash
    of the reference captions committed with it (None for a photo stored before captions were hashed)."""
    size: int | None
    mtime: float | None
    sha256: str
    captions_hash: str | None


@dataclass(frozen=True)
class CaptionRow:
    image_id: str
    captioner: str
    config_hash: str
    text: str
    status: str
    error: str | None
    model: str | None
    prompt_id: str | None
    settings: dict[str, Any]
    seconds: float | None
    attempts: int
    prompt_tokens: int = 0            # an endpoint captioner's tokens for this caption (0 in-process)
    completion_tokens: int = 0


@dataclass(frozen=True)
class Problem:
    stage: str
    item: str
    severity: str                     # 'skipped' | 'failed' | 'repaired' | 'warning'
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NeighbourRow:
    """One neighbour of a photo, as the neighbours stage stored it (lists are nearest first)."""
    id: str                           # the neighbour photo
    score: float
    duplicate: int                    # 0: none, 1: a near duplicate of the photo, 2: the same photo (same sha256)


@dataclass(frozen=True)
class PromptRow:
    """The prompt written for one photo under one prompts configuration."""
    image_id: str
    config_hash: str
    prompt_id: str                    # hash of the text
    text: str
    n_captions: int
    trimmed: bool                     # neighbours' captions left out to fit the token budget
    warning: str | None


@dataclass(frozen=True)
class QueryRow:
    """One evaluation query of a photo (``kind`` 'short' or 'detail')."""
    config_hash: str
    image_id: str
    kind: str
    generator: str
    text: str
    status: str                       # 'ok' | 'failed'
    error: str | None
    source_caption_idx: int | None
    prompt_tokens: int
    completion_tokens: int
    created_at: float


@dataclass(frozen=True)
class RankingRow:
    """Where one method ranked the true photo of one query, and what it ranked first."""
    method: str
    query_kind: str
    image_id: str                     # the true photo of the query
    rank: float                       # expected rank under random tie-breaking (1 = top)
    top_ids: tuple[str, ...]
    top_scores: tuple[float, ...]


@dataclass(frozen=True)
class EvaluationRow:
    """One metric of one (method, query kind), with its interval and the paired test against the baseline."""
    eval_hash: str
    method: str
    query_kind: str
    metric: str                       # 'R@1' | 'R@5' | 'R@10' | 'MRR' | 'MedR'
    estimate: Estimate
    n: int
    baseline: str | None = None       # None: no paired test for this metric (the baseline itself, or none)
    vs_baseline: Difference | None = None
    created_at: float = 0.0


@dataclass(frozen=True)
class StageRunRow:
    """One run of one stage. ``status`` reads ``crashed`` for a run left ``running`` by a process that ended."""
    id: int
    stage: str
    variant: str                      # a per-captioner stage's captioner, or 'human' ('' for the others; column `target`)
    config_hash: str
    status: Status                    # running, completed, failed, cancelled, crashed or not applicable
    started_at: float
    finished_at: float | None
    done: int
    failed: int
    skipped: int
    message: str | None
    flow_run_id: str | None
    config: str | None                # JSON of the stage configuration
    owner: str | None                 # JSON: the process that ran it (host, pid, start)
    run_id: int | None                # the workspace run it belonged to
    usage: str | None = None          # JSON: what its requests to a model server cost (TokenUsage; endpoint captioners)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status.read(self.status))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["usage"] = json.loads(self.usage) if self.usage else None
        return out


# -- caption metrics (pipeline.caption_metrics.storage converts them) ----------------------------------------
@dataclass(frozen=True)
class CaptionMetricPhoto:
    """One photo of a caption-metrics row: the caption scored and the counts corpus scores are made from."""
    image_id: str
    caption: str                                  # '' where the photo had no usable caption (scored 0)
    bleu_stats: tuple[float, ...] | None          # None: BLEU not computed (no references)
    meteor_stats: tuple[float, ...] | None        # None: METEOR not computed


@dataclass(frozen=True)
class CaptionMetricScore:
    """A photo's score under one per-photo metric (value None: no value for this photo)."""
    image_id: str
    metric: str
    value: float | None


@dataclass(frozen=True)
class StoredCaptionRow:
    """One caption-metrics row as stored: a captioner (or ``human``) scored photo by photo."""
    row_hash: str
    row: str
    vocabulary: int
    distinct: float | None
    shown: str
    seconds: float | None
    photos: tuple[CaptionMetricPhoto, ...]        # in the row's photo order
    scores: tuple[CaptionMetricScore, ...]        # by metric, then photo order


@dataclass(frozen=True)
class CaptionSummaryRow:
    row: str
    row_hash: str
    missing: int


@dataclass(frozen=True)
class CaptionMetricValue:
    """A row's value of one metric with its interval and the paired test against the baseline."""
    row: str
    metric: str
    estimate: Estimate
    n: int                                        # photos the value is made from
    baseline: str | None = None                   # None: no paired test for this cell
    vs_baseline: Difference | None = None


@dataclass(frozen=True)
class StoredCaptionSummary:
    """The caption-metrics summary of one stage configuration."""
    config_hash: str
    baseline: str | None
    n_photos: int
    tokenizer: str
    reference_rule: str
    n_boot: int
    confidence: float
    notes: tuple[str, ...]
    seconds: float | None
    created_at: float
    rows: tuple[CaptionSummaryRow, ...]           # column order
    metrics: tuple[str, ...]                      # computed, in catalogue order
    not_computed: tuple[tuple[str, str], ...]     # (metric, why not), in the order the reasons were found
    values: tuple[CaptionMetricValue, ...]


# -- runs of the workspace and their live progress (pipeline.runs) ---------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    id: int
    owner: str
    status: Status                    # running, completed, failed, cancelled or crashed
    what: str
    started_by: str
    started_at: float
    finished_at: float | None = None
    flow_run_id: str = ""
    deployment: str = ""
    api_url: str = ""
    log_path: str = ""
    message: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status.read(self.status))

    @property
    def pid(self) -> int | None:
        return _owner_field(self.owner, "pid")

    @property
    def host(self) -> str:
        return str(_owner_field(self.owner, "host") or "")

    @property
    def is_running(self) -> bool:
        return self.status is Status.RUNNING

    @property
    def seconds(self) -> float:
        return (self.finished_at or time.time()) - self.started_at


@dataclass(frozen=True)
class StageLive:
    """What a running (or finished) stage of a run last reported."""
    stage: str
    position: int
    state: Status                  # running, completed, or not applicable (the message says why)
    done: int
    total: int
    failures: int
    batches_done: int
    batches: int
    rate: float | None
    message: str
    level: str
    started_at: float              # wall clock
    updated_at: float
    tokens: int = 0                # model-server tokens so far (an endpoint captioner's)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", Status.read(self.state))

    @property
    def ended(self) -> bool:
        return self.state.ended

    def event(self) -> ProgressEvent:
        """The same numbers as a progress event (for the progress bars of the CLI and the TUI)."""
        now_mono, now = time.monotonic(), time.time()
        at = now_mono - max(0.0, now - self.updated_at)
        started = now_mono - max(0.0, now - self.started_at)
        kind = {Status.COMPLETED: EventKind.FINISH, Status.NOT_APPLICABLE: EventKind.NOT_APPLICABLE}.get(
            self.state, EventKind.ADVANCE)
        return ProgressEvent(self.stage, kind, done=self.done,
                             total=self.total, failures=self.failures, message=self.message if self.ended else "",
                             started_at=started, at=at, tokens=self.tokens)

    def describe(self) -> str:
        """``caption:knn-consensus 120 of 400 (3 failed), 12.0/s``."""
        if self.state is Status.NOT_APPLICABLE:
            return f"{self.stage} not applicable: {self.message}"
        text = f"{self.stage} {self.done} of {self.total}" if self.total else f"{self.stage} starting"
        if self.batches and self.state is not Status.COMPLETED:
            text += f" (batch {min(self.batches_done + 1, self.batches)} of {self.batches})"
        if self.failures:
            text += f" ({self.failures} failed)"
        if self.state is Status.COMPLETED:
            text += ", finished"
        elif self.rate:
            text += f", {self.rate:.1f}/s"
            elapsed = self.updated_at - self.started_at
            if self.tokens and elapsed > 0:
                text += f", {self.tokens / elapsed:,.0f} tok/s"
        return text


@dataclass(frozen=True)
class LogLine:
    seq: int
    stage: str
    level: str
    text: str
    at: float


def _owner_field(owner: str, key: str) -> Any:
    try:
        return json.loads(owner).get(key)
    except (ValueError, AttributeError):
        return None
