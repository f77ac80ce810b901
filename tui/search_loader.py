"""The search index, loaded in the background as soon as the app has shown the workspace's stages.

Building a ``SearchIndex`` reads the caption and image snapshots, and the first query loads the text
embedder (about 10 s on a small CPU). The app starts that work once its first screen has read the
workspace's stages (``CapsearchApp.preload_search_index``), in a daemon thread (it never keeps the app
from quitting), so that by the time someone reaches the Search screen and types,
the index and the text model are ready. One index per scope (``collection``, ``targets``) and data version
(the app's ``data_version``, bumped when a run changes the workspace), built on first request.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

WARM_UP_QUERY = "a photo"


class SearchLoader:
    def __init__(self, ws: Any):
        self.ws = ws
        self._lock = threading.Lock()
        self._futures: dict[tuple[str, int], Future] = {}

    def start(self, scope: str, version: int = 0) -> Future:
        """The index of ``scope`` for data ``version``: being built, or built (a failed build is tried again;
        indexes of older versions are forgotten)."""
        with self._lock:
            for key in [k for k in self._futures if k[1] < version]:
                del self._futures[key]
            future = self._futures.get((scope, version))
            if future is None or (future.done() and future.exception() is not None):
                future = self._futures[(scope, version)] = Future()
                threading.Thread(target=self._build, args=(scope, future), daemon=True,
                                 name=f"capsearch-search-index-{scope}").start()
            return future

    def get(self, scope: str, version: int = 0, timeout: float | None = None) -> Any:
        """The index of ``scope``, waiting for it to be built (raises what building raised)."""
        return self.start(scope, version).result(timeout)

    def ready(self, scope: str, version: int = 0) -> bool:
        with self._lock:
            future = self._futures.get((scope, version))
        return future is not None and future.done() and future.exception() is None

    def _build(self, scope: str, future: Future) -> None:
        try:
            from pipeline.search_service import SearchIndex

            index = SearchIndex(self.ws, scope=scope)
            index.text_queries([WARM_UP_QUERY])   # loads the text embedder now, not on the first key
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the index
            future.set_exception(exc)
            return
        future.set_result(index)
