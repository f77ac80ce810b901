"""capsearch's Prefect runtime: the processes and servers around the flows, and how a run is stopped.

``settings`` (the Prefect environment the entry points apply), ``server`` (``capsearch server``, the
temporary API server, ``prepare_prefect``), ``parent_watch`` (children that stop when their parent dies),
``shutdown`` (stop signals), ``detach`` (runs that outlive the terminal), ``control`` (cancelling a run
from anywhere), ``history``, ``prefect_runs`` and ``crashed_runs`` (Prefect's flow-run history).
Standard library at import: Prefect is imported inside the functions that use it.
"""
