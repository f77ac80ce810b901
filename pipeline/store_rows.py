"""The rows the workspace store returns (``pipeline.store.Store``): frozen dataclasses, one per table, so
every layer (stages, services, the CLI, the TUI) reads attributes instead of guessing dict keys.

The store owns the SQL; these types are what crosses the boundary. ``as_dict()``, where a row has one, is
the row as ``--json`` prints it (the table's columns, in the table's order).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


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
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    baseline: str | None
    diff: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    p_value: float | None
    created_at: float


@dataclass(frozen=True)
class StageRunRow:
    """One run of one stage. ``status`` reads ``crashed`` for a run left ``running`` by a process that ended."""
    id: int
    stage: str
    variant: str                      # a per-captioner stage's captioner, or 'human' ('' for the others; column `target`)
    config_hash: str
    status: str                       # 'running' | 'completed' | 'failed' | 'cancelled' | 'crashed'
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

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["usage"] = json.loads(self.usage) if self.usage else None
        return out
