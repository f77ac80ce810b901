"""The kNN-consensus choices for many candidate sets, computed in this process, as JSON.

``python -m tests.consensus_probe OUT.json`` builds (from a fixed seed) candidate sets like a target's
neighbours' captions: 384-dimensional unit vectors, some captions repeated (identical vectors), some
differing from another caption only in the last bits (near-identical vectors whose scores sit on top of
each other), and writes the chosen index of each set and the BLAS kernel numpy ran.
``tests/test_knn_consensus.py`` runs it under two kernels (``OPENBLAS_CORETYPE``) and compares.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

N_SETS = 400


def _unit_rows(x):
    """Rows scaled to unit length without BLAS (the inputs must be the same bytes under every kernel, as
    vectors read from the store are)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    return (x / np.sqrt((x * x).sum(axis=-1, keepdims=True))).astype(np.float32)


def candidate_sets(seed: int = 11):
    import numpy as np

    rng = np.random.default_rng(seed)
    for _ in range(N_SETS):
        n_distinct = int(rng.integers(3, 12))
        base = rng.standard_normal((n_distinct, 384)).astype(np.float32)
        base[1:] = base[0] + 0.35 * base[1:]                  # similar captions, as neighbours' are
        rows = list(_unit_rows(base))
        for _ in range(int(rng.integers(0, 6))):
            pick = int(rng.integers(0, len(rows)))
            if rng.random() < 0.5:
                rows.append(rows[pick].copy())                  # the same caption again
            else:
                rows.append(_unit_rows(rows[pick] + rng.standard_normal(384).astype(np.float32) * 1e-7))
        order = rng.permutation(len(rows))
        yield np.stack([rows[i] for i in order]).astype(np.float32)


def probe() -> dict:
    from pipeline.captioners.knn_consensus import consensus_index
    from tests.blas import blas_core

    return {"choices": [consensus_index(v) for v in candidate_sets()], "blas_core": blas_core()}


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(probe()))
