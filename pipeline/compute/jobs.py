"""What travels between the flow and a worker: the ``BatchJob`` out, the ``BatchPayload`` back.

Both are small picklable values: a job names the compute function, the stage's label and configuration
(``Config``, the whole settings object: a worker reads no ``capsearch.toml``), the batch index and the
stage's own inputs (``ImagesIn``, ``CaptionsIn``, ``TextsIn``); a payload holds the stage's output
(``ImagesOut``, ``CaptionsOut``, ``TextsOut``), the progress the batch made while computing and the
messages it said, and which process computed it.
"""
from __future__ import annotations

import importlib
import os
import pickle
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.progress import StageProgress


@dataclass(frozen=True)
class ComputeRef:
    """How any process computes a batch of one stage run."""
    compute: str                 # "package.module:function" of a compute function (``pipeline.compute.*``)
    label: str                   # the stage's label, e.g. "caption:blip-base"
    variant: str
    config_hash: str
    config: Config
    run: str = ""                # the run's key: state a run keeps where the model runs (``batch_limit``)
    uses_gpu: bool = False


@dataclass(frozen=True)
class BatchJob:
    ref: ComputeRef
    index: int
    inputs: Any

    def nbytes(self) -> int:
        """The job's size as it travels (pickled)."""
        return len(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))


@dataclass
class BatchPayload:
    index: int
    output: Any
    advanced: int = 0                                     # items the batch counted done while computing
    failures: int = 0                                     # of which failed
    tokens: int = 0                                       # what they cost a model server (an endpoint captioner)
    messages: list[tuple[str, str]] = field(default_factory=list)   # (text, level) said while computing
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    seconds: float = 0.0

    def nbytes(self) -> int:
        return len(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))


class RecordingProgress(StageProgress):
    """The progress of a batch computed away from the flow: counted and kept, replayed by the flow."""

    def __init__(self, stage: str):
        self._lock = threading.Lock()
        self.advanced = self.failed = self.spent = 0
        self.said: list[tuple[str, str]] = []
        super().__init__(stage, 0, None)

    def advance(self, n: int = 1, failures: int = 0, tokens: int = 0) -> None:
        with self._lock:
            self.advanced += n
            self.failed += failures
            self.spent += tokens

    def message(self, text: str, level: str = "info") -> None:
        with self._lock:
            self.said.append((text, level))


def resolve(name: str) -> Callable[[BatchJob, StageProgress], Any]:
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"compute function '{name}' cannot be imported here: {exc} "
                          "(is capsearch installed in this worker's environment?)") from None
    return fn


def run_job(job: BatchJob, progress: StageProgress | None = None, **local: Any) -> BatchPayload:
    """Compute a job. With ``progress`` (in the flow's process) the batch reports as it goes; without, its
    progress and messages are kept in the payload for the flow to report when it arrives. ``local`` are
    keyword arguments only the flow's process can give (kNN consensus's store-backed captioner)."""
    t0 = time.perf_counter()
    recording = RecordingProgress(job.ref.label) if progress is None else None
    output = resolve(job.ref.compute)(job, progress or recording, **local)
    payload = BatchPayload(job.index, output, seconds=time.perf_counter() - t0)
    if recording is not None:
        payload.advanced, payload.failures, payload.tokens = recording.advanced, recording.failed, recording.spent
        payload.messages = recording.said
    return payload


# -- state a run keeps where its model runs ---------------------------------------------------------------
_state: dict[tuple[str, str, str, str], Any] = {}
_state_lock = threading.Lock()
RUNS_KEPT = 8          # per-run state of this many runs is kept in a long-lived worker


def run_state(ref: ComputeRef, what: str, make: Callable[[], Any]) -> Any:
    """One object per (run, stage, configuration, what) in this process: the stage run's ``BatchLimit``
    lives here, in the process whose GPU ran out of memory, for every later batch of the run it computes."""
    key = (ref.run, ref.label, ref.config_hash, what)
    with _state_lock:
        value = _state.get(key)
        if value is None:
            runs = list(dict.fromkeys(k[0] for k in _state))
            if ref.run not in runs and len(runs) >= RUNS_KEPT:
                oldest = runs[0]
                for k in [k for k in _state if k[0] == oldest]:
                    del _state[k]
            value = _state[key] = make()
        return value


_process: dict[tuple[str, str, str], Any] = {}


def process_state(ref: ComputeRef, what: str, make: Callable[[], Any]) -> Any:
    """One object per (stage, configuration, what) for the life of this process: a built embedder or
    captioner (models load once per process through ``pipeline.models.cache`` either way)."""
    key = (ref.label, ref.config_hash, what)
    with _state_lock:
        value = _process.get(key)
        if value is None:
            value = _process[key] = make()
        return value
