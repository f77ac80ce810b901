"""One vocabulary for how a run, a stage run and a stage's live progress stand, and one for a stage's stored output.

``Status`` is what the store keeps (``runs.status``, ``stage_runs.status``, ``run_progress.state``), what
``StageOutcome``/``RunOutcome`` carry, what ``--json`` prints and what the CLI and the TUI show. It is a
``StrEnum``: a member is the string it is stored as, so it compares equal to that string and JSON writes it as is.

Before this vocabulary, a stage's live progress was stored as ``finished`` and ``not-applicable`` where stage runs
said ``completed`` and ``not applicable``; ``Status.read`` reads those older rows (a tolerant reader: no
migration, and a workspace written by an older capsearch reads the same).

Standard library only: every layer imports it.
"""
from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"                  # its process ended without recording the end (read so at once)
    NOT_APPLICABLE = "not applicable"    # a stage that does not apply to the workspace: nothing ran, nothing failed
    NOT_STARTED = "not started"          # a stage the run planned but did not reach (the run summary)

    @classmethod
    def read(cls, text: str) -> "Status":
        """A stored status, older spellings included."""
        return _OLDER.get(text) or cls(text)

    @property
    def ended(self) -> bool:
        return self not in (Status.RUNNING, Status.NOT_STARTED)


class Coverage(StrEnum):
    """How much of a stage's output the store holds (``StageCounts.state``: ``capsearch status``, the TUI)."""

    DONE = "done"
    MISSING = "missing"                  # some items not computed yet
    FAILED = "failed"                    # some items failed (``--retry-failed``)
    NOT_APPLICABLE = Status.NOT_APPLICABLE.value
    ERROR = "error"                      # the counts could not be read


_OLDER = {"finished": Status.COMPLETED, "not-applicable": Status.NOT_APPLICABLE}

# how a run ends (a stage run may also be not applicable)
RUN_ENDINGS = (Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.CRASHED)
