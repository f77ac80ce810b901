"""Claiming a workspace for a run: its run lock, its record in the store and its live progress.

Every run, however it was started (the CLI, the background runs the TUI starts, a run of a Prefect
deployment), goes through ``flows.run_path.execute``, the one place that calls :func:`claim_workspace`:

1. the workspace's run lock (``pipeline.run_lock``): a second run refuses at once, naming the running
   one, or waits its turn;
2. the run's record (``pipeline.runs``: owner, what, who started it, the Prefect flow run and the API
   it reports to, the log of a background run); runs left ``running`` by dead processes are marked
   ``crashed`` first;
3. a ``ProgressRecorder`` that writes the stages' progress to the store at a bounded rate, so another
   process (a TUI, ``capsearch status --follow``) can show it;
4. at the end, whatever happened, the run's final state, even after a second stop signal abandoned it.
"""
from __future__ import annotations

import getpass
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from pipeline import shutdown
from flows.run_context import RunContext
from pipeline.config import environment
from pipeline.errors import reason
from pipeline.live_progress import ProgressRecorder
from pipeline.run_lock import RunLock, held_in_this_process
from pipeline.run_owner import owner_state
from pipeline.runs import current_run, describe_run, finish_run, run_progress, start_run
from pipeline.states import Status

STARTED_BY_ENV = "CAPSEARCH_RUN_STARTED_BY"     # set for a background run: who started it, and from where
RUN_LOG_ENV = "CAPSEARCH_RUN_LOG"               # set for a background run: the file its output goes to


def command_line(argv: Sequence[str] | None = None) -> str:
    """This process's command as a user would type it (``capsearch -w ws run -s caption``)."""
    args = list(sys.argv if argv is None else argv)
    if not args:
        return "python"
    head = os.path.basename(args[0])
    rest = args[1:]
    if head in ("capsearch", "__main__.py") or args[0].endswith(("capsearch/__main__.py", "capsearch/cli/__init__.py")):
        head = "capsearch"
    text = " ".join([head, *rest])
    return text if len(text) <= 120 else text[:117] + "..."


def user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        return f"uid {os.getuid()}"


def started_by_default() -> str:
    """Who starts a run from this process: as told by the process that started it in the background
    (``CAPSEARCH_RUN_STARTED_BY``), else the user and this command."""
    told = environment().run_started_by
    if told:
        return told
    return f"{user_name()} with `{command_line()}`"


def describe_request(stages: Sequence[str] | None, captioners: Sequence[str] | None = None,
                     retry_failed: bool = False) -> str:
    """``every stage``, ``caption, embed-captions for knn-consensus (retrying failed items)``."""
    what = ", ".join(stages) if stages else "every stage"
    if captioners:
        what += f" for {', '.join(captioners)}"
    return what + (" (retrying failed items)" if retry_failed else "")


def recording_progress() -> bool:
    return environment().record_progress


@dataclass
class Claim:
    """A claimed workspace: the run's id in the store; ``finish`` sets how it ended (default: completed)."""
    run_id: int
    status: Status | None = None
    message: str = ""

    def finish(self, status: Status, message: str = "") -> None:
        self.status, self.message = status, message


def _stopped_by_signal(exc: BaseException) -> bool:
    """A stop signal's exception: ours (``KeyboardInterrupt``) or Prefect's bridge of one (``TerminationSignal``,
    looked up only where Prefect is loaded: a run with nothing to compute never imports it)."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    prefect_exceptions = sys.modules.get("prefect.exceptions")
    return prefect_exceptions is not None and isinstance(exc, prefect_exceptions.TerminationSignal)


def alive_run(ws) -> str | None:
    """The run going on in the workspace as its record says, if its process still runs here (whatever became
    of the lock file): what, who started it, since when, how far it got."""
    running = current_run(ws.store)
    if running is None or owner_state(running.owner) != "alive":
        return None
    if running.pid == os.getpid() and not held_in_this_process(ws.root):
        return None          # a record this process could not finish (a full disk), not a run
    return describe_run(running, run_progress(ws.store, running.id))


@contextmanager
def claim_workspace(ctx: RunContext, what: str, started_by: str | None = None, *, wait: bool = False,
                    on_wait: Callable[[str], None] | None = None, deployment: str = "",
                    record_progress: bool | None = None) -> Iterator[Claim]:
    """Hold the workspace of ``ctx`` for one run (see the module); sets ``ctx.run_id`` and ``ctx.recorder``.

    Raises ``WorkspaceBusy`` when another run holds it (unless ``wait``), ``WaitCancelled`` when a stop
    signal ends the wait.
    """
    store = ctx.ws.store
    lock = RunLock(ctx.ws.root, alive_run=lambda: alive_run(ctx.ws))
    who = started_by or started_by_default()
    lock.acquire(wait=wait, details={"what": what, "started_by": who}, on_wait=on_wait,
                 cancel=ctx.cancel)
    try:
        # the Prefect API is recorded with the flow run, once there is one (a run with nothing to compute has none)
        run_id = start_run(store, what, who, deployment=deployment, log_path=environment().run_log)
        claim = Claim(run_id)
        record = recording_progress() if record_progress is None else record_progress
        recorder = ProgressRecorder(store, run_id) if record else None
        ctx.run_id, ctx.recorder = run_id, recorder

        def abandoned(why: shutdown.Abandon) -> None:
            if recorder is not None:
                recorder.close()
            finish_run(store, run_id, why.status, why.message)

        forget_abandon = shutdown.add_abandon(abandoned)
        try:
            yield claim
        except BaseException as exc:
            if claim.status is None:
                if ctx.cancel.is_set() or _stopped_by_signal(exc):
                    claim.finish(Status.CANCELLED, "stopped after the batches in flight; finished batches are kept")
                else:
                    claim.finish(Status.FAILED, reason(exc))
            raise
        finally:
            forget_abandon()
            if recorder is not None:
                recorder.close()
            ctx.recorder = None
            finish_run(store, run_id, claim.status or Status.COMPLETED, claim.message)
    finally:
        lock.release()
