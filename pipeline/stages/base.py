"""The stage interface every step of the pipeline implements.

A stage knows which items it should produce for the current configuration
(``items``), which of them are already in the store (``done_items``) and which
failed (``failed_items``). Work is split into batches of item ids; ``run_batch``
computes one batch and writes it to the store in one transaction (``commit``), so
a run that dies loses at most the batches in flight, and ``done_items`` (what the
store holds) is exactly what was committed. ``pipeline.stages.run.run_stage`` runs a stage directly;
``flows/`` runs the same batches as cached, retriable Prefect tasks.

Every stage's ``config()`` includes the configuration hashes of the stages it
reads from, so changing, say, the prompt template changes the hash of the
prompts and of every captioner that uses them, and nothing else.

A stage that cannot apply to a workspace says why in one line (``applicable()``): evaluation on a
collection whose targets have no held-out captions, neighbour-based captioning where no photo is
captioned. *Not applicable* is a state of its own: not a failure, not done. ``counts()``, ``status``,
the flows and ``run_stage`` all read it from here, so a run on such a workspace finishes cleanly.

Stages whose outputs depend on more than their configuration (a target's neighbours depend on its
photo; its prompt on its neighbours' captions) record each item's input fingerprint with the item's
outputs, in the batch's transaction (``record_inputs``), and count an item done only while the
fingerprint is current (``fresh``): an edited caption file or a replaced photo recomputes exactly the
items it touches, and a rerun after a crash never mistakes a stale output for a done one.
"""
from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Iterator

from pipeline.compute.jobs import BatchJob, BatchPayload, ComputeRef, run_job
from pipeline.crashpoints import BATCH_COMMITTED, crash_point
from pipeline.hashing import hash_obj
from pipeline.keys import stage_key
from pipeline.progress import StageProgress
from pipeline.stage_keys import StageKeys
from pipeline.states import Coverage
from pipeline.usage import TokenUsage
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class Batch:
    index: int
    ids: tuple[str, ...]
    content_hash: str            # hash of everything the batch reads (part of its cache key)


@dataclass
class BatchResult:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    messages: list[str] = field(default_factory=list)
    usage: TokenUsage | None = None      # what the batch's requests to a model server cost (endpoint captioners)


@dataclass
class BatchReport(BatchResult):
    """What a batch task hands its flow: the batch's ``BatchResult``, how many items it was given to compute
    (``ran``: 0 for a batch with nothing left to compute) and the process that computed them."""
    ran: int = 0
    pid: int = 0

    @classmethod
    def of(cls, result: BatchResult, ran: int, pid: int) -> "BatchReport":
        return cls(result.done, result.failed, result.skipped, [str(m) for m in result.messages][:50], result.usage,
                   ran=ran, pid=pid)


@dataclass
class PreparedBatch:
    """A batch of a stage computed anywhere, as the flow's process prepared it: the ``job`` that travels to
    whichever process computes it, and what the flow keeps for the commit (``local``, never sent)."""
    batch: Batch
    job: BatchJob
    local: Any = None


class BatchCancelled(Exception):
    """The run was cancelled in the middle of a batch (``Stage.cancelled()``): the batch stopped between two
    units of work, and what it committed before stopping is kept."""


@dataclass
class StageCounts:
    stage: str
    total: int
    done: int
    failed: int
    failures: dict[str, str] = field(default_factory=dict)   # item -> reason
    not_applicable: str | None = None                          # why the stage does not apply (None: it does)
    error: str | None = None                                   # why the counts could not be read (status)
    usage: dict[str, Any] | None = None                        # an endpoint captioner: what its stored captions cost

    @property
    def missing(self) -> int:
        return max(0, self.total - self.done - self.failed)

    @property
    def state(self) -> Coverage:
        if self.error:
            return Coverage.ERROR
        if self.not_applicable:
            return Coverage.NOT_APPLICABLE
        if self.failed:
            return Coverage.FAILED
        return Coverage.MISSING if self.missing else Coverage.DONE

    def as_dict(self) -> dict[str, Any]:
        out = {"stage": self.stage, "state": self.state, "total": self.total, "done": self.done,
               "failed": self.failed, "missing": self.missing, "failures": self.failures,
               "not_applicable": self.not_applicable}
        if self.usage is not None:
            out["usage"] = self.usage
        return out if self.error is None else {**out, "error": self.error}


class Stage(ABC):
    name: ClassVar[str]
    uses_gpu: ClassVar[bool] = False     # runs one task at a time per GPU
    network: ClassVar[bool] = False      # retried with backoff on failure
    batched: ClassVar[bool] = True       # False: one batch holds every item (evaluate, report)
    cheap: bool = False                  # ~1 ms per item: batches of at least orchestration.cheap_batch_size

    def __init__(self, ws: Workspace, variant: str = ""):
        self.ws = ws
        self.cfg = ws.config
        self.store = ws.store
        # Which instance of a per-captioner stage this is: the captioner's name (``caption:knn-consensus``), or
        # ``human`` for the photos' own captions (``embed-captions:human``); '' for a stage that has one instance.
        self.variant = variant
        # Set by the flow running the stage (``flows.tasks``) to the run's cancel event: a stage whose
        # batches are long may stop between units of work inside a batch (``BatchCancelled``).
        self.cancel_event: threading.Event | None = None
        # This stage run, for state kept where its batches are computed (``pipeline.compute.jobs.run_state``:
        # the model batch limit that out of GPU memory lowers for the rest of the run).
        self.run_token = uuid.uuid4().hex

    def cancelled(self) -> bool:
        """Whether the run was cancelled (a stop signal, the TUI's cancel) while this stage runs."""
        return self.cancel_event is not None and self.cancel_event.is_set()

    @property
    def label(self) -> str:
        return f"{self.name}:{self.variant}" if self.variant else self.name

    # -- identity ---------------------------------------------------------------------------
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The stage configuration (model, template, settings) plus upstream configuration hashes."""

    def config_hash(self) -> str:
        return stage_key(self.name, self.variant, self.config())

    @cached_property
    def keys(self) -> StageKeys:
        """The configurations of the configuration-only stages under this stage's settings
        (``pipeline.stage_keys``): what their ``config()`` returns."""
        return StageKeys(self.cfg)

    # -- applicability ------------------------------------------------------------------------
    def applicable(self) -> str | None:
        """None when the stage applies to this workspace, else the one-line reason it does not.

        Read from the store at each call: a stage may apply once an earlier stage of the same run has
        ingested photos. Before anything is ingested every stage applies (it just has nothing to do)."""
        return None

    # -- items -------------------------------------------------------------------------------
    @abstractmethod
    def items(self) -> list[str]:
        """Every item this stage should produce for the current configuration, sorted."""

    @abstractmethod
    def done_items(self) -> set[str]:
        """Items whose outputs are in the store for the current configuration."""

    def failed_items(self) -> dict[str, str]:
        """Items that failed for the current configuration, with the reason."""
        return {}

    def item_fingerprints(self, ids: list[str]) -> dict[str, str]:
        """Content identity of each item's inputs (default: the image sha256)."""
        rows = {r.id: r.sha256 for r in self.store.images(ids=ids)}
        return {i: rows.get(i, "") for i in ids}

    # -- inputs recorded with the outputs ------------------------------------------------------
    def record_inputs(self, fingerprints: dict[str, str]) -> None:
        """Inside ``commit()``: the input fingerprint each item's outputs were computed from."""
        self.store.put_item_inputs(self.label, self.config_hash(), fingerprints)

    def fresh(self, stored: set[str], current: dict[str, str] | None = None) -> set[str]:
        """The items of ``stored`` (outputs in the store) whose recorded inputs are still current.

        ``current`` maps item -> fingerprint now (default: ``item_fingerprints``). An output with no
        recorded fingerprint (written by a capsearch before fingerprints were kept) counts as current."""
        if not stored:
            return set()
        current = self.item_fingerprints(sorted(stored)) if current is None else current
        recorded = self.store.item_inputs(self.label, self.config_hash())
        return {i for i in stored if recorded.get(i) is None or recorded[i] == current.get(i)}

    # -- batches -------------------------------------------------------------------------------
    def batch_size(self) -> int:
        """Items per task: a few dozen photos where a photo costs real compute, more where it costs ~1 ms
        (a task's own overhead, ~50 ms in Prefect, would otherwise dominate)."""
        orch = self.cfg.orchestration
        return max(orch.batch_size, orch.cheap_batch_size) if self.cheap else orch.batch_size

    def settled_items(self, retry_failed: bool = False) -> set[str]:
        """Items a run need not compute again: done ones, and failed ones unless retrying them."""
        settled = self.done_items()
        if not retry_failed:
            settled |= set(self.failed_items())
        return settled

    def plan(self, only_missing: bool = False, retry_failed: bool = False) -> list[Batch]:
        ids = self.items()
        if only_missing:
            skip = self.settled_items(retry_failed)
            ids = [i for i in ids if i not in skip]
        size = len(ids) if not self.batched else self.batch_size()
        batches = []
        for n, start in enumerate(range(0, len(ids), max(1, size))):
            chunk = ids[start:start + max(1, size)]
            fp = self.item_fingerprints(chunk)
            batches.append(Batch(n, tuple(chunk), hash_obj([self.config_hash(), sorted(fp.items())])))
        return batches

    def prepare(self, progress: StageProgress | None = None) -> None:
        """Work before the batches (e.g. scanning the collection). Must be cheap when nothing changed."""

    @abstractmethod
    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        """Compute one batch, then write all of it inside one ``commit()`` (idempotent)."""

    @contextmanager
    def commit(self, point: str | None = None) -> Iterator[None]:
        """Everything the batch writes inside is one transaction: all of it is committed, or none.

        Compute before entering (the write lock is held inside). ``point`` names the crash-injection
        point just before COMMIT (``pipeline.crashpoints``)."""
        with self.store.transaction():
            yield
            if point is not None:
                crash_point(point)
        crash_point(BATCH_COMMITTED)

    def finalize(self, progress: StageProgress | None = None) -> None:
        """Work after every batch (e.g. exporting arrays)."""

    # -- batches computed anywhere (``pipeline.compute``) ------------------------------------------------
    # A stage whose batches are model work splits each one in three: ``prepare_batch`` (the flow's process
    # reads the store into a small picklable job), the ``compute`` function (any process: a Dask worker
    # that cannot see the workspace) and ``commit_payload`` (the flow's process writes the payload in one
    # transaction). ``run_split`` runs the three in this process: the thread runner and ``run_stage``.
    compute: ClassVar[str | None] = None     # "module:function" computing a job (None: ``run_batch`` only)

    @property
    def remote(self) -> bool:
        """Whether this stage's batches may be computed in another process (``--runner dask``)."""
        return self.compute is not None

    def compute_ref(self) -> ComputeRef:
        assert self.compute is not None
        return ComputeRef(self.compute, self.label, self.variant, self.config_hash(), self.cfg, self.run_token,
                          bool(self.uses_gpu))

    def prepare_batch(self, batch: Batch, progress: StageProgress | None = None,
                      send_photos: bool = False) -> PreparedBatch:
        """Read what ``batch`` needs from the store into its job (``send_photos``: local photos' bytes go
        with it, for workers that cannot see the collection's folder)."""
        raise NotImplementedError(f"{self.label} computes its batches only in the flow's process")

    def commit_payload(self, prepared: PreparedBatch, payload: BatchPayload,
                       progress: StageProgress | None = None) -> BatchResult:
        """Write what a job computed, in one transaction (``commit()``), and say what the batch did."""
        raise NotImplementedError(f"{self.label} computes its batches only in the flow's process")

    def compute_here(self, job: BatchJob, progress: StageProgress | None = None) -> BatchPayload:
        """Compute a job in this process, reporting progress as it goes."""
        return run_job(job, progress or StageProgress(self.label, 0))

    def run_split(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        """Prepare, compute and commit one batch in this process: the same three steps a cluster takes."""
        prepared = self.prepare_batch(batch, progress)
        return self.commit_payload(prepared, self.compute_here(prepared.job, progress), progress)

    def counts(self) -> StageCounts:
        reason = self.applicable()
        if reason:
            return StageCounts(self.label, 0, 0, 0, not_applicable=reason)
        items = self.items()
        done = self.done_items() & set(items)
        failed = {k: v for k, v in self.failed_items().items() if k in set(items) and k not in done}
        return StageCounts(self.label, len(items), len(done), len(failed), failed)

