"""Runs that outlive the terminal: what the TUI and ``capsearch run --detach`` start.

A detached run executes outside the process that asked for it:

* **through Prefect**, when ``capsearch serve`` serves the workspace (it records itself in the store,
  :func:`record_serving`) and its Prefect server answers: a flow run of the workspace's on-demand
  deployment (``capsearch-pipeline/run-<workspace id>``, ``flows.naming``), which the Prefect UI shows under that deployment;
* **otherwise as a background process**: ``capsearch run`` in a session of its own
  (``start_new_session``: no terminal, so neither a closed terminal nor a dropped SSH connection nor the
  TUI's exit reaches it), with its output in ``<workspace>/logs/run-<time>.log``. It is *not* watched by
  the process that started it (it is meant to outlive it); the temporary Prefect server it starts for
  itself watches *it* (``flows.runtime.parent_watch``) and goes when it goes. SIGTERM, SIGINT and SIGHUP sent to
  it stop it between batches like any ``capsearch run`` (``pipeline.shutdown``).

Either way the run claims the workspace (one run at a time) and writes its live progress to the store,
where ``capsearch status --follow`` and any TUI read it, and ``flows.runtime.control`` cancels it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from flows.naming import run_tags
from flows.workspace_run import RUN_LOG_ENV, STARTED_BY_ENV, describe_request
from pipeline.errors import CapsearchError
from pipeline.run_lock import WorkspaceBusy
from pipeline.run_owner import current_owner, owner_state
from pipeline.runs import RunInfo, current_run, describe_run, recent_runs, run_progress
from pipeline.workspace import Workspace

SERVE_META = "serve"               # store meta: the `capsearch serve` process that serves this workspace
START_TIMEOUT = 120.0              # seconds a background process may take to claim the workspace


@dataclass
class Detached:
    """A run started outside this process."""
    how: str                       # 'deployment' | 'background'
    what: str
    pid: int | None = None
    log_path: str = ""
    run_id: int | None = None
    flow_run_id: str = ""
    flow_run_name: str = ""
    deployment: str = ""
    api_url: str = ""
    ui_url: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started: float = field(default_factory=time.time, repr=False)   # when it was launched (its run is newer)

    def describe(self) -> str:
        if self.how == "deployment":
            return (f"{self.what}: flow run {self.flow_run_name} of the deployment {self.deployment}, "
                    f"started by `capsearch serve`" + (f" ({self.ui_url})" if self.ui_url else ""))
        return f"{self.what}: background process {self.pid}, log {self.log_path}"

    def reap(self) -> int | None:
        """Collect the background process if it has ended (so it does not linger as a zombie); its exit code."""
        return self.process.poll() if self.process is not None else None


# -- the serve record ----------------------------------------------------------------------------------------
def record_serving(ws: Workspace, api_url: str, ui_url: str, deployment: str) -> None:
    """`capsearch serve` serves ``deployment`` (the on-demand one) of this workspace, reporting to ``api_url``."""
    ws.store.set_meta(SERVE_META, {"owner": current_owner(), "api_url": api_url, "ui_url": ui_url,
                                   "deployment": deployment, "since": time.time()})


def clear_serving(ws: Workspace) -> None:
    record = ws.store.get_meta(SERVE_META)
    if record and record.get("owner") == current_owner():
        ws.store.delete_meta(SERVE_META)


def serving(ws: Workspace) -> dict[str, Any] | None:
    """The `capsearch serve` process serving this workspace, when it runs and its Prefect server answers."""
    record = ws.store.get_meta(SERVE_META)
    if not record or owner_state(record.get("owner")) != "alive":
        return None
    import httpx

    try:
        if httpx.get(f"{record['api_url'].rstrip('/')}/health", timeout=3.0).status_code != 200:
            return None
    except (httpx.HTTPError, KeyError):
        return None
    return record


# -- starting ----------------------------------------------------------------------------------------------
def refuse_if_busy(ws: Workspace) -> None:
    running = current_run(ws.store)
    if running is not None:
        raise WorkspaceBusy(ws.root, describe_run(running, run_progress(ws.store, running.id)))


def start_detached(ws: Workspace, stages: Sequence[str] | None = None, captioners: Sequence[str] | None = None,
                   retry_failed: bool = False, *, started_by: str, runner: str | None = None,
                   dask_address: str | None = None, use_deployment: bool = True, wait: bool = False) -> Detached:
    """Start a run outside this process (see the module); refuses at once when the workspace is busy, unless
    ``wait``: then the run waits its turn."""
    if not wait:
        refuse_if_busy(ws)
    served = serving(ws) if use_deployment else None
    if served is not None:
        return _through_deployment(ws, served, stages, captioners, retry_failed, started_by, wait)
    return _in_background(ws, stages, captioners, retry_failed, started_by, runner, dask_address, wait)


def _through_deployment(ws: Workspace, served: dict[str, Any], stages: Sequence[str] | None,
                        captioners: Sequence[str] | None, retry_failed: bool, started_by: str,
                        wait: bool = False) -> Detached:
    from flows.runtime.prefect_api import client

    api_url = served["api_url"]
    name = served["deployment"]
    parameters = {"stages": list(stages) if stages else None, "captioners": list(captioners) if captioners else None,
                  "retry_failed": retry_failed, "started_by": started_by, "wait": wait}
    with client(api_url, timeout=15.0) as prefect:
        deployment = prefect.read_deployment_by_name(name)
        flow_run = prefect.create_flow_run_from_deployment(deployment.id, parameters=parameters,
                                                           tags=[*run_tags(ws), "detached"])
    ui = str(served.get("ui_url") or api_url.rstrip("/").removesuffix("/api"))
    return Detached("deployment", describe_request(stages, captioners, retry_failed), flow_run_id=str(flow_run.id),
                    flow_run_name=flow_run.name, deployment=name, api_url=api_url,
                    ui_url=f"{ui}/runs/flow-run/{flow_run.id}")


def background_command(ws: Workspace, stages: Sequence[str] | None, captioners: Sequence[str] | None,
                       retry_failed: bool, runner: str | None = None, dask_address: str | None = None,
                       wait: bool = False) -> list[str]:
    args = [sys.executable, "-m", "capsearch", "-w", str(ws.root), "run"]
    if stages:
        args += ["--stage", ",".join(stages)]
    for name in captioners or ():
        args += ["--captioner", name]
    if retry_failed:
        args.append("--retry-failed")
    if runner:
        args += ["--runner", runner]
    if dask_address:
        args += ["--address", dask_address]
    if wait:
        args.append("--wait")
    return args


def _in_background(ws: Workspace, stages: Sequence[str] | None, captioners: Sequence[str] | None,
                   retry_failed: bool, started_by: str, runner: str | None, dask_address: str | None,
                   wait: bool = False) -> Detached:
    logs = ws.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.log"
    env = {"COLUMNS": "120", **os.environ, STARTED_BY_ENV: f"{started_by}, in the background", RUN_LOG_ENV: str(log),
           "PYTHONUNBUFFERED": "1"}
    command = background_command(ws, stages, captioners, retry_failed, runner, dask_address, wait)
    with open(log, "ab") as out:
        out.write(f"# {' '.join(command)}\n# started by {started_by} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        out.flush()
        # A session of its own (setsid in the child, no preexec_fn): no controlling terminal, its own process
        # group, so the terminal's hang-up and the starter's exit do not reach it.
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=os.getcwd(), start_new_session=True, close_fds=True)
    detached = Detached("background", describe_request(stages, captioners, retry_failed), pid=proc.pid,
                        log_path=str(log), process=proc)
    if not wait:   # a waiting run claims the workspace whenever the running one ends
        detached.run_id = _wait_for_claim(ws, proc, log).id
    return detached


def _wait_for_claim(ws: Workspace, proc: subprocess.Popen[bytes], log: Path,
                    timeout: float = START_TIMEOUT) -> RunInfo:
    """Until the background process has recorded its run (or ended: then its output says why)."""
    deadline = time.monotonic() + timeout
    store = ws.store
    while True:
        for run in recent_runs(store, limit=5):
            if run.pid == proc.pid:
                return run
        code = proc.poll()
        if code is not None:
            tail = _tail(log)
            raise CapsearchError(f"the background run ended at once (exit code {code}); its log {log} says: {tail}")
        if time.monotonic() > deadline:
            raise CapsearchError(f"the background run (pid {proc.pid}) did not start within {timeout:.0f} s; "
                                 f"see {log}")
        time.sleep(0.1)


def _tail(log: Path, lines: int = 6) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(unreadable)"
    kept = [line for line in text if not line.startswith("#")][-lines:]
    return " | ".join(kept) or "(nothing)"
