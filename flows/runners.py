"""Task runners: threads in this process (default), or a Dask cluster for the caption and embedding stages.

``--runner dask`` without an address starts a local cluster with one single-threaded
worker process per GPU (``CUDA_VISIBLE_DEVICES`` pinned per worker), or one worker on
a machine without GPUs. With an address, batches go to that existing cluster. Either way
only the stages whose batches compute anywhere (``Stage.remote``: image embedding, the
generative captioners, caption embedding) go to Dask, and only their computation: a
worker gets a ``BatchJob`` and returns a payload (``flows.compute``), and this process
commits it. Workers never see the workspace, its store or its configuration file (the
job carries the settings); they need capsearch, the models and read access to the
photos (or the photos' bytes in the job: ``orchestration.send_photos``). Dask workers are
other processes, so they need a Prefect API server they can reach: the configured one,
else the shared local server every run reports to (``flows.runtime.server.prefect_api``).

The local cluster's worker processes are started with ``spawn`` whatever the user's Dask
configuration says (its default is ``spawn`` too): the process starting them runs Prefect's
threads, and a process forked from a threaded one can hang on a lock another thread held
at that instant. Stages start no processes of their own (images are decoded in threads), so
the workers stay daemonic, Dask's default: they end with their nanny.

``no_heartbeats`` turns off flow-run heartbeats for the flows a run starts (one flow run per stage).
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pipeline.errors import ConfigError
from pipeline.stages.base import Stage

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

RUNNERS = ("thread", "dask")
_QUIET_LOGGERS = ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny",
                  "distributed.core", "distributed.http.proxy", "distributed.deploy", "bokeh", "tornado")


def thread_workers(configured: int = 0) -> int:
    """Tasks in flight per stage with the thread runner (GPU stages still run one batch at a time):
    ``orchestration.flow_threads``, or 2 to 4 by the CPUs when that is 0."""
    return configured if configured > 0 else min(4, max(2, os.cpu_count() or 2))


def scales_out(stage: Stage) -> bool:
    """Whether the stage's batches go to Dask with ``--runner dask``: those computed anywhere (the model work).
    The rest (ingest, neighbours, prompts, kNN consensus, queries, caption metrics, evaluate, report) stay in
    threads of the flow's process, where they read and write the store."""
    return bool(stage.remote)


def runs_elsewhere(task_runner: Any) -> bool:
    """Whether a task runner runs tasks in other processes (Dask), which get jobs, never the run session."""
    return type(task_runner).__name__ == "DaskTaskRunner"


def is_cluster_failure(exc: BaseException) -> bool:
    """An error of the Dask cluster itself (its scheduler gone, a connection closed), not of a batch's work."""
    import asyncio
    import concurrent.futures

    module = type(exc).__module__ or ""
    return (module.startswith(("distributed", "tornado")) or isinstance(exc, (concurrent.futures.CancelledError,
                                                                            asyncio.CancelledError))
            or (isinstance(exc, OSError) and "comm" in str(exc).lower()))


def cluster_failure(exc: BaseException, task_runner: Any) -> ConfigError:
    """The one-line error a run ends with when its Dask cluster goes away (what was committed stays)."""
    from pipeline.errors import one_line

    address = getattr(task_runner, "address", None) or "the local cluster"
    return ConfigError(f"the Dask cluster at {address} went away ({one_line(exc)}); the batches committed so far "
                       "are kept: start the cluster again (or use --runner thread) and run again to compute the rest")


def send_photos(setting: str, dask_address: str | None) -> bool:
    """Whether batch jobs carry local photos' bytes (``orchestration.send_photos``): by default for an
    existing cluster, whose workers may run on machines that do not have the folder."""
    return setting == "always" or (setting == "auto" and bool(dask_address))


def check_runner(runner: str) -> str:
    if runner not in RUNNERS:
        raise ConfigError(f"runner '{runner}' is not one of {', '.join(RUNNERS)}")
    return runner


def quiet_dask_logs() -> None:
    import dask

    dask.config.set({"distributed.admin.system-monitor.gil.enabled": False,
                     "distributed.logging.distributed": "error"})
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def visible_gpus() -> list[int]:
    """Indices of the CUDA GPUs this process may use (none on a CPU-only machine)."""
    try:
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - no torch or a broken driver: run on CPU
        return []


def cluster_spec(gpus: list[int]) -> dict[str, dict[str, Any]]:
    """Worker specs: one single-threaded worker process per GPU, or one on CPU."""
    from distributed import Nanny

    slots = gpus or [None]
    spec: dict[str, dict[str, Any]] = {}
    for n, gpu in enumerate(slots):
        env = {"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}
        spec[f"capsearch-{n}"] = {"cls": Nanny, "options": {
            "nthreads": 1, "env": env, "host": "127.0.0.1", "silence_logs": logging.ERROR,
            "memory_limit": 0}}
    return spec


@contextmanager
def local_cluster(gpus: list[int] | None = None) -> Iterator[str]:
    """Start a local Dask cluster (one worker per GPU) and yield its scheduler address."""
    import dask
    from distributed import Scheduler, SpecCluster

    quiet_dask_logs()
    spec = cluster_spec(visible_gpus() if gpus is None else gpus)
    # Never fork this process: it runs Prefect's threads (see the module doc). Set for the cluster's
    # lifetime, since a nanny here starts a worker process again when one dies.
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        cluster = SpecCluster(workers=spec, scheduler={"cls": Scheduler, "options": {
            "host": "127.0.0.1", "dashboard": False, "dashboard_address": "127.0.0.1:0"}},
            silence_logs=logging.ERROR, name="capsearch")
        try:
            yield cluster.scheduler_address
        finally:
            cluster.close()


@contextmanager
def dask_scheduler(address: str | None) -> Iterator[str]:
    """The given scheduler address, or a local cluster started for the duration of the block."""
    if address:
        quiet_dask_logs()
        yield address
        return
    with local_cluster() as started:
        yield started


@contextmanager
def task_runners(runner: str, dask_address: str | None = None,
                 threads_in_flight: int = 0) -> Iterator[Callable[[Stage], TaskRunner[Any]]]:
    """Yield ``runner_for(stage)``: Dask for the stages that scale out (when asked), threads otherwise
    (``threads_in_flight`` batches at once: ``orchestration.flow_threads``)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    threads = ThreadPoolTaskRunner(max_workers=thread_workers(threads_in_flight))
    if check_runner(runner) == "thread":
        yield lambda stage: threads
        return
    from prefect.settings import PREFECT_API_URL
    from prefect_dask import DaskTaskRunner

    if not PREFECT_API_URL.value():
        raise ConfigError("the dask runner needs a Prefect server that its workers can reach: start "
                          "`capsearch server` (or set PREFECT_API_URL) and run again")
    with dask_scheduler(dask_address) as address:
        dask = DaskTaskRunner(address=address)
        yield lambda stage: dask if scales_out(stage) else threads


def submission_window(task_runner: Any) -> int:
    """How many batch tasks to keep in flight: the runner's threads (Dask: every worker thread)."""
    client = getattr(task_runner, "client", None) if type(task_runner).__name__ == "DaskTaskRunner" else None
    if client is not None:
        try:
            return max(1, 2 * sum(client.nthreads().values()))
        except Exception:  # noqa: BLE001
            return 2
    return max(1, getattr(task_runner, "_max_workers", None) or thread_workers())


@contextmanager
def no_heartbeats() -> Iterator[None]:
    """Turn off flow-run heartbeats for the flows started inside the block.

    Prefect joins its heartbeat thread when a flow run ends, which costs up to a
    second per flow run; capsearch starts one flow run per stage. The open-source
    server does not use heartbeats unless an automation is set up for them.
    """
    from prefect.context import SettingsContext, get_settings_context

    current = get_settings_context()
    settings = current.settings
    if settings.flows.heartbeat_frequency is None:
        yield
        return
    quiet = settings.model_copy(update={"flows": settings.flows.model_copy(update={"heartbeat_frequency": None})})
    with SettingsContext(profile=current.profile, settings=quiet):
        yield
