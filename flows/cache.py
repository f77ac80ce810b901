"""Cache keys and result storage of batch tasks.

A batch task's key is the hash of the stage label, the batch's content hash (which
covers the stage configuration hash and the content of every input of the batch)
and the task's source. Nothing else the task receives (the run key, the list of
ids still to compute) enters the key, and inputs alone never make one.

Results and cache records live in the workspace (``Workspace.results_dir``), so
deleting a workspace deletes its cache too. The store is the truth: the flow
submits a batch whose outputs are missing with ``refresh_cache=True``, so a cache
record never hides missing rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects

from pipeline.workspace import Workspace

KEY_VERSION = 1


@dataclass
class BatchContent(CachePolicy):
    """Key from the stage label and the batch content hash (never from the other task inputs)."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        ref, batch = inputs.get("stage"), inputs.get("batch")
        if ref is None or batch is None:
            return None
        return hash_objects(KEY_VERSION, ref.label, batch.content_hash, raise_on_failure=True)


def batch_cache_policy() -> CachePolicy:
    return TASK_SOURCE + BatchContent()


def result_storage(ws: Workspace) -> Path:
    """The workspace's result folder (Prefect stores a local-file-system block there; cache records too)."""
    path = Path(ws.results_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path
