"""The process environment capsearch sets for itself and the libraries it runs: one place.

``quiet_defaults()`` is called first thing by every entry point (the CLI, ``tui.launch``, ``flows.runtime.settings``
when Prefect is set up, and the tests' conftest): analytics off, no progress bars or advisory warnings of
the model libraries drawing over capsearch's own, a start-up timeout long enough for Prefect's temporary
server on a cold disk, and, where asked (the tests), the model hub offline. A value the user set is kept
(the start-up timeout is only ever raised). Standard library only: importing it must stay cheap.
"""
from __future__ import annotations

import os
from typing import MutableMapping

# Set unless the user set them.
QUIET = {
    "DO_NOT_TRACK": "1",                                # Prefect (and others) send no analytics
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",                  # no fork warning from tokenizers' thread pool
    # transformers' and the hub's own progress bars and warnings would draw over capsearch's bars
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
# Only where nothing may be downloaded (the tests): the hub and transformers never reach the network.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# Prefect's temporary API server may take long to start the first time on a cold disk: at least this.
STARTUP_TIMEOUT_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT = "120"


def quiet_defaults(environ: MutableMapping[str, str] | None = None, *, offline: bool = False) -> dict[str, str]:
    """Set the quiet defaults in ``environ`` (``os.environ`` by default); returns what was set."""
    env = os.environ if environ is None else environ
    set_now: dict[str, str] = {}
    for key, value in {**QUIET, **(OFFLINE if offline else {})}.items():
        if not env.get(key):
            env[key] = set_now[key] = value
    try:
        current = float(env.get(STARTUP_TIMEOUT_VAR) or 0)
    except ValueError:
        current = 0.0
    if current < float(STARTUP_TIMEOUT):
        env[STARTUP_TIMEOUT_VAR] = set_now[STARTUP_TIMEOUT_VAR] = STARTUP_TIMEOUT
    return set_now
