"""Prefect progress artifacts: one per stage run, with a key unique to that run, so the UI shows progress."""
from __future__ import annotations

import re
import time
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

MIN_INTERVAL = 1.0   # seconds between updates (each one is an API call)


def artifact_key(label: str, flow_run_id: str) -> str:
    """``capsearch-<stage>-<run>``: lowercase letters, digits and dashes, as Prefect requires."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    run = re.sub(r"[^a-z0-9]", "", str(flow_run_id).lower())[:12]
    return f"capsearch-{slug}-{run}"


class ProgressArtifact:
    """Creates the artifact at 0 % and updates it at most once a second, and at the end."""

    def __init__(self, label: str, flow_run_id: str, total: int):
        self.label = label
        self.total = total
        self.key = artifact_key(label, flow_run_id)
        self._last = 0.0
        self._id: UUID | None = None
        try:
            self._id = create_progress_artifact(0.0 if total else 100.0, key=self.key,
                                                description=self._describe(0, 0))
        except Exception:  # noqa: BLE001 - the UI's progress never fails a run
            self._id = None

    def _describe(self, done: int, failed: int) -> str:
        tail = f", {failed} failed" if failed else ""
        return f"{self.label}: {done} of {self.total} items{tail}"

    def update(self, done: int, failed: int = 0, final: bool = False, total: int | None = None) -> None:
        """``total``: the stage's total now, where it counts in finer units than items (``StageProgress.add_work``)."""
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self._id is None or (not final and now - self._last < MIN_INTERVAL):
            return
        self._last = now
        pct = 100.0 if final or not self.total else min(100.0, 100.0 * done / self.total)
        try:
            update_progress_artifact(self._id, pct, description=self._describe(done, failed))
        except Exception:  # noqa: BLE001
            pass
