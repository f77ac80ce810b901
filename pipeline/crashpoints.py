"""Crash injection for tests: every point where a crash could leave half-written state, named once.

A test sets ``CAPSEARCH_CRASH_AT`` in a child process's environment to one of these names,
optionally with ``@N`` (crash the N-th time the point is reached, default the first), and
the process ends with ``os._exit(CRASH_EXIT_CODE)`` right there: no ``finally``, no
``atexit``, no flushing, like a power cut or SIGKILL. The rerun must then end in the same
store as a run that never crashed.

The variable is read once at import; with it unset ``crash_point`` is one comparison.
"""
from __future__ import annotations

import os
import threading

from pipeline.config import environment

ENV = "CAPSEARCH_CRASH_AT"             # read by pipeline.config.environment (Environment.crash_at)
CRASH_EXIT_CODE = 97

# -- inside a stage's batch transaction: written, not committed ----------------------------------------
INGEST_PREPARE = "ingest.prepare"              # between the data set's file problems and the collection meta
INGEST_BATCH = "ingest.batch"                  # between a batch's photos and their reference captions
INGEST_FINALIZE = "ingest.finalize"            # between removing vanished photos and writing the new split
EMBED_IMAGES_BATCH = "embed-images.batch"      # between a batch's vectors and its problems
NEIGHBOURS_PREPARE = "neighbours.prepare"      # between dropping stale neighbour lists and recording the DB
NEIGHBOURS_BATCH = "neighbours.batch"          # after a batch's neighbours, before COMMIT
PROMPTS_BATCH = "prompts.batch"                # between a batch's prompts and their warnings
CAPTION_BATCH = "caption.batch"                # after a batch's captions, before COMMIT
EMBED_CAPTIONS_BATCH = "embed-captions.batch"  # after a batch's caption vectors, before COMMIT
CAPTION_METRICS_BATCH = "caption-metrics.batch"  # between a batch's scored rows and the summary
QUERIES_BATCH = "queries.batch"                # after a batch's queries, before COMMIT
EVALUATE_RESULTS = "evaluate.results"          # between the rankings and the metrics + summary
# -- between commits ---------------------------------------------------------------------------------------
BATCH_COMMITTED = "batch.committed"            # a batch committed; the next one not started
REPORT_FILES = "report.files"                  # report files renamed into place; the report's record not written
# -- files ----------------------------------------------------------------------------------------------------
SNAPSHOT_DATA = "snapshot.data"                # a snapshot's new vector file in place; its manifest not yet
FILE_RENAME = "file.rename"                    # an atomic file write: temp file synced, not yet renamed

ALL_POINTS = (
    INGEST_PREPARE, INGEST_BATCH, INGEST_FINALIZE, EMBED_IMAGES_BATCH, NEIGHBOURS_PREPARE, NEIGHBOURS_BATCH,
    PROMPTS_BATCH, CAPTION_BATCH, EMBED_CAPTIONS_BATCH, CAPTION_METRICS_BATCH, QUERIES_BATCH, EVALUATE_RESULTS,
    BATCH_COMMITTED, REPORT_FILES,
    SNAPSHOT_DATA, FILE_RENAME,
)


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, nth = value.partition("@")
    if name not in ALL_POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown crash point; known: {', '.join(ALL_POINTS)}")
    return name, int(nth) if nth else 1


_ARMED = _parse(environment().crash_at)
_hits = 0
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """End the process here when the test switch names this point (and this is its N-th hit)."""
    global _hits
    if _ARMED is None or _ARMED[0] != name:
        return
    with _lock:
        _hits += 1
        if _hits == _ARMED[1]:
            os._exit(CRASH_EXIT_CODE)
