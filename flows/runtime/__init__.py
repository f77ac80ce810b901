"""capsearch's Prefect runtime: the processes and servers around the flows.

``settings`` (the Prefect environment the entry points apply), ``server`` (``capsearch server``, the API a
run reports to, ``prepare_prefect``), ``local_server`` (the local Prefect server the commands of a capsearch
home share), ``server_watch`` (a run notices its server's death), ``prefect_api`` (the one helper around
Prefect's synchronous calls and clients), ``parent_watch`` (children that stop when their parent dies),
``detach`` (runs that outlive the terminal), ``control`` (cancelling a run from anywhere), ``history``,
``prefect_runs`` and ``crashed_runs`` (Prefect's flow-run history). Stop signals are ``pipeline.shutdown``.
Standard library at import: Prefect is imported inside the functions that use it.
"""
