"""Batch computations that run anywhere: in the flow's process, or in a Dask worker on another machine.

A stage whose batches are model work (``embed-images``, generative ``caption:<name>``, ``embed-captions``)
splits each batch in three (``pipeline.stages.base.Stage``): the flow process reads what the batch needs
from the store into a small picklable ``BatchJob`` (ids, where each photo is, prompt texts, the
configuration), a ``compute`` function of this package turns the job into a ``BatchPayload`` (vectors,
captions, per-item failures and their reasons), and the flow process commits the payload in one
transaction. Nothing in this package opens the workspace, the store, a snapshot or a result folder, and
it imports none of them (``tests/test_cluster.py`` checks both: by import, and with a worker that cannot
see the workspace at all).
"""
