"""Neighbour search cost over 10k, 100k and 1M stored reference vectors.

For each DB size: the time per target of ``find_neighbours`` (the exact blocked search the
``neighbours`` stage runs, with the stage's block size) and the peak memory the search
allocates on top of the DB matrix (tracemalloc, which sees numpy's buffers). Cost per
target should grow linearly with the DB; working memory stays bounded by the blocks.
Sizes up to 100k report the best of three runs.
At 10k and 100k it also times loading the DB from a workspace store (what the stage does
once per run). Vectors are random unit vectors of CLIP's size (512).
"""
from __future__ import annotations

import argparse
import tempfile
import tracemalloc

import numpy as np

from bench import machine, stopwatch

DIM = 512


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def search_cost(db: np.ndarray, targets: np.ndarray, k: int, block_size: int, index: str = "exact") -> tuple[float, int]:
    """(seconds, peak bytes allocated during the search)."""
    from pipeline.neighbours import find_neighbours

    ids = [f"ref{i}" for i in range(len(db))]
    tids = [f"t{i}" for i in range(len(targets))]
    tracemalloc.start()
    tracemalloc.reset_peak()
    with stopwatch() as t:
        find_neighbours(targets, db, k, block_size=block_size, target_ids=tids, db_ids=ids, index=index)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return t[0], peak


def store_load_seconds(db: np.ndarray) -> float:
    """Seconds to read the DB back from a workspace store, as the neighbours stage does."""
    from pipeline.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        keys = [f"{i:064x}" for i in range(len(db))]
        for start in range(0, len(db), 50_000):
            store.put_vectors("image/bench", keys[start:start + 50_000], db[start:start + 50_000])
        with stopwatch() as t:
            store.get_vectors("image/bench", keys)
        store.close()
    return t[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="DB sizes, comma-separated")
    p.add_argument("--targets", type=int, default=400, help="targets searched (the study's 400)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--block-size", type=int, default=4096, help="neighbours.block_size")
    p.add_argument("--store-up-to", type=int, default=100_000, help="also time loading from a store up to this size")
    p.add_argument("--faiss", action="store_true", help="also time the FAISS flat index")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    targets = unit_rows(rng, args.targets)
    print(f"# {machine()}")
    print(f"# {args.targets} targets, k={args.k}, dim={DIM}, block_size={args.block_size}")
    print(f"{'db size':>9} {'db MiB':>8} {'ms/target':>10} {'per 10k db':>11} {'search peak MiB':>16} {'store load s':>13}")
    rows = []
    for n in sizes:
        db = unit_rows(rng, n)
        search_cost(db[:2048], targets[:8], args.k, args.block_size)  # warm-up
        # Best of 3 where a run is short: one cold run can be several times slower (BLAS warming up).
        runs = [search_cost(db, targets, args.k, args.block_size) for _ in range(3 if n <= 100_000 else 1)]
        seconds, peak = min(r[0] for r in runs), max(r[1] for r in runs)
        per_target = seconds / args.targets * 1000
        load = f"{store_load_seconds(db):13.2f}" if n <= args.store_up_to else f"{'-':>13}"
        print(f"{n:>9,} {db.nbytes / 2**20:8.0f} {per_target:10.3f} {per_target / (n / 10_000):11.4f} "
              f"{peak / 2**20:16.1f} {load}", flush=True)
        if args.faiss:
            f_seconds, f_peak = search_cost(db, targets, args.k, args.block_size, index="faiss")
            print(f"{'  faiss':>9} {'':>8} {f_seconds / args.targets * 1000:10.3f} {'':>11} {f_peak / 2**20:16.1f}")
        rows.append((n, per_target))
        del db
    if len(rows) > 1:
        (n0, t0), (n1, t1) = rows[0], rows[-1]
        print(f"cost ratio {n1 // n0}x DB -> {t1 / t0:.1f}x time per target (linear: {n1 / n0:.0f}x)")


if __name__ == "__main__":
    main()
