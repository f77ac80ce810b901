"""Noticing within a second that the Prefect server a run reports to has died.

Prefect's client retries a refused connection to a server it reached before, with growing pauses, on every
call: when the server is killed mid-run (the out-of-memory killer, a SIGKILL) the run used to stall for
minutes, print Prefect's "Error logging to API" lines and end with ``ConnectError``. A run started by
``flows.api.run`` watches its server instead (:class:`ServerWatch`, a daemon thread):

* a server whose process capsearch knows (the shared local server: host, pid and start time) is dead
  when that process has ended (``pipeline.run_owner``), checked every half second;
* any other (``capsearch server``, a ``PREFECT_API_URL``) when nothing listens at its address any more:
  connections refused for ``REFUSED_SECONDS`` in a row (a busy server that answers slowly is alive).

Its death ends the run at once, recorded failed with one line that says what happened (``on_death``;
``flows.api`` abandons the batches in flight through ``pipeline.shutdown.abandon``); a rerun goes on
from the batches already committed.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable
from urllib.parse import urlparse

from pipeline.errors import CapsearchError
from pipeline.run_owner import owner_state

POLL_SECONDS = 0.5
REFUSED_SECONDS = 3.0


class PrefectServerGone(CapsearchError):
    """The Prefect server the run reported to died during the run."""


def refused(api_url: str, timeout: float = 1.0) -> bool:
    """Whether a connection to the API's host and port is refused (nothing listens there)."""
    parsed = urlparse(api_url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False      # a timeout or an unreachable network says nothing about the server's death


class ServerWatch:
    """Watches the server at ``api_url`` (``owner``: its process, when known) while a run reports to it."""

    def __init__(self, api_url: str, owner: str | None = None, on_death: Callable[[str], None] | None = None,
                 poll: float = POLL_SECONDS, refused_for: float = REFUSED_SECONDS):
        self.api_url = api_url
        self.owner = owner
        self.on_death = on_death
        self.poll = poll
        self.refused_for = refused_for
        self.death: str | None = None        # what happened, once noticed
        self._refused_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="capsearch-server-watch", daemon=True)

    def __enter__(self) -> "ServerWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _describe(self) -> str:
        pid = ""
        if self.owner:
            import json

            try:
                pid = f" (pid {json.loads(self.owner)['pid']})"
            except (ValueError, KeyError, TypeError):
                pid = ""
        return f"the Prefect server at {self.api_url.removesuffix('/api')}{pid} died during the run"

    def check(self) -> str | None:
        """Look once: the death's description when the server is gone (also remembered in ``death``)."""
        if self.death is not None:
            return self.death
        if self.owner is not None:
            gone = owner_state(self.owner) == "dead"
        else:
            now = time.monotonic()
            if refused(self.api_url):
                self._refused_since = self._refused_since or now
            else:
                self._refused_since = None
            gone = self._refused_since is not None and now - self._refused_since >= self.refused_for
        if gone:
            self.death = self._describe()
        return self.death

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            if self.check() is not None:
                if self.on_death is not None and not self._stop.is_set():
                    self.on_death(self.death)
                return
