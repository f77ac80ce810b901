"""capsearch's synchronous calls into Prefect, in one place.

* :func:`sync`: Prefect's dual methods (``State.result``, ``Flow.to_deployment``, ``RunnerDeployment.apply``)
  look at the calling thread to decide whether to return a value or a coroutine: in a thread that runs an
  event loop (a notebook, an async test) they hand back a coroutine that nobody awaits, and a failed run
  would read as completed. ``sync`` asks for the value, always (Prefect's private ``_sync=True``, passed
  here and nowhere else).
* :func:`client`: Prefect's synchronous API client, for a given server's API or the one this process reports to.
* :func:`reporting_to`: the flows run inside report to the given API (the shared local server).

Prefect is imported inside the functions: importing this module costs nothing.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.states import State

T = TypeVar("T")


def sync(method: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``method(*args, **kwargs)`` run synchronously, whatever thread calls it (see the module)."""
    return method(*args, _sync=True, **kwargs)


def result(state: "State", raise_on_failure: bool = True) -> Any:
    """A final state's result, or its exception raised (``raise_on_failure``)."""
    return sync(state.result, raise_on_failure=raise_on_failure)


@contextmanager
def client(api_url: str | None = None, timeout: float = 10.0) -> Iterator["SyncPrefectClient"]:
    """Prefect's synchronous client for ``api_url`` (default: the API this process reports to)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # this thread's settings only: other threads of the process (the TUI's) keep theirs
    with temporary_settings(updates={PREFECT_API_URL: api_url}) if api_url else _nothing():
        with get_client(sync_client=True, httpx_settings={"timeout": timeout}) as opened:
            yield opened


@contextmanager
def reporting_to(api_url: str) -> Iterator[None]:
    """Inside, Prefect reports to ``api_url``: in this thread's context and in the process-wide one, which the
    threads Prefect starts for a run (its log and event workers) read, as Prefect's own test harness does."""
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with _temporary_global_settings_context(get_settings_context()):
            yield


def drain_workers(timeout: float = 5.0) -> None:
    """Send the logs and events Prefect still holds for the API (before that API may go away)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout, at_exit=False)
        except Exception:  # noqa: BLE001 - best effort: what is not sent is only missing from the UI
            pass


@contextmanager
def _nothing() -> Iterator[None]:
    yield
