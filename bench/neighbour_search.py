"""Neighbour search cost over 10k, 100k and 1M stored reference vectors.

For each DB size, on the same targets and DB, in alternating rounds (order reversed every other
round; median and range over the rounds):

* capsearch: ``find_neighbours`` (the exact blocked search the ``neighbours`` stage runs, with the
  stage's block size) on the DB grouped once by vector (``DistinctRows``, as the stage holds it);
* the physical bound: one matmul of the targets against the whole DB (every score computed once,
  nothing selected); ``capsearch / bound`` says what selection and the bookkeeping add;
* with ``--faiss``: FAISS's exact ``IndexFlatIP`` (``neighbours.index = "faiss"``) timed apart: the
  index **build** (a normalised copy of the DB added to the index), the **search** on a built index,
  and capsearch's ``find_neighbours(index="faiss")`` as the stage runs it (build + search + the same
  bookkeeping, once per stage batch).

Also: the peak memory the search allocates on top of the DB matrix (tracemalloc, which sees numpy's
buffers), the one-off grouping, and (up to ``--store-up-to``) the time to load the DB from a
workspace store (what the stage does once per run). Vectors are random unit vectors of CLIP's size (512).
"""
from __future__ import annotations

import argparse
import tempfile
import tracemalloc

import numpy as np

from bench import Spread, alternating, load_average, machine, ratios, stopwatch

DIM = 512


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def search_cost(db, targets: np.ndarray, k: int, block_size: int, index: str = "exact") -> float:
    """Seconds of ``find_neighbours``; ``db`` is a ``DistinctRows``."""
    from pipeline.neighbours import find_neighbours

    ids = [f"ref{i}" for i in range(db.n)]
    tids = [f"t{i}" for i in range(len(targets))]
    with stopwatch() as t:
        find_neighbours(targets, db, k, block_size=block_size, target_ids=tids, db_ids=ids, index=index)
    return t[0]


def search_peak(db, targets: np.ndarray, k: int, block_size: int, index: str = "exact") -> int:
    """Peak bytes ``find_neighbours`` allocates (tracemalloc, which sees numpy's buffers), in a run of its own:
    tracing slows Python code down, so it never runs during a timed call."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    search_cost(db, targets, k, block_size, index)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def matmul_bound(db: np.ndarray, targets: np.ndarray, block_size: int) -> float:
    """Seconds to compute every target-DB score once (in the stage's target blocks), nothing else."""
    with stopwatch() as t:
        for start in range(0, len(targets), block_size):
            targets[start:start + block_size] @ db.T
    return t[0]


def faiss_build(db: np.ndarray):
    """(seconds, index): what ``neighbours.index = "faiss"`` builds before searching."""
    import faiss

    from pipeline.neighbours import unit_rows as normalised

    with stopwatch() as t:
        fx = faiss.IndexFlatIP(db.shape[1])
        fx.add(np.ascontiguousarray(normalised(db), dtype=np.float32))
    return t[0], fx


def faiss_search(fx, targets: np.ndarray, k: int) -> float:
    with stopwatch() as t:
        fx.search(np.ascontiguousarray(targets, dtype=np.float32), k)
    return t[0]


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
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--store-up-to", type=int, default=100_000, help="also time loading from a store up to this size")
    p.add_argument("--faiss", action="store_true", help="also time FAISS's flat index (build and search apart)")
    args = p.parse_args(argv)
    from pipeline.distinct import DistinctRows

    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    targets = unit_rows(rng, args.targets)
    print(f"# {machine()}")
    print(f"# {load_average()} at the start")
    print(f"# {args.targets} targets, k={args.k}, dim={DIM}, block_size={args.block_size}, {args.rounds} alternating "
          "rounds, median (range); ms per target; bound = one matmul of targets x DB")
    head = (f"{'db size':>9} {'db MiB':>7} | {'capsearch ms/target':>22} {'per 10k':>8} | {'bound ms':>8} "
            f"{'capsearch/bound':>16} | {'peak MiB':>8} {'grouping s':>10} {'store load s':>12}")
    if args.faiss:
        head += f" | {'faiss build ms':>14} {'faiss search ms/t':>17} {'capsearch faiss ms/t':>20} {'faiss peak MiB':>14}"
    print(head)
    rows = []
    for n in sizes:
        db = unit_rows(rng, n)
        with stopwatch() as g:
            grouped = DistinctRows.of(db)
        search_cost(DistinctRows.of(db[:2048]), targets[:8], args.k, args.block_size)  # warm-up
        paths = {"capsearch": lambda: search_cost(grouped, targets, args.k, args.block_size),
                 "bound": lambda: matmul_bound(db, targets, args.block_size)}
        if args.faiss:
            built: list = []

            def build() -> float:
                seconds, fx = faiss_build(db)
                built[:] = [fx]
                return seconds

            paths.update({"faiss build": build, "faiss search": lambda: faiss_search(built[0], targets, args.k),
                          "capsearch faiss": lambda: search_cost(grouped, targets, args.k, args.block_size, "faiss")})
        t = alternating(paths, args.rounds)
        peak = search_peak(grouped, targets, args.k, args.block_size)
        fpeak = search_peak(grouped, targets, args.k, args.block_size, "faiss") if args.faiss else 0
        per_target = Spread.of(t["capsearch"]).scaled(1000 / args.targets)
        load = f"{store_load_seconds(db):12.2f}" if n <= args.store_up_to else f"{'-':>12}"
        line = (f"{n:>9,} {db.nbytes / 2**20:7.0f} | {per_target.show('.3f'):>22} {per_target.median / (n / 10_000):8.4f} | "
                f"{Spread.of(t['bound']).median * 1000 / args.targets:8.3f} {ratios(t['capsearch'], t['bound']).show('.2f'):>16} | "
                f"{peak / 2**20:8.1f} {g[0]:10.2f} {load}")
        if args.faiss:
            line += (f" | {Spread.of(t['faiss build']).median * 1000:14.1f} "
                     f"{Spread.of(t['faiss search']).median * 1000 / args.targets:17.3f} "
                     f"{Spread.of(t['capsearch faiss']).median * 1000 / args.targets:20.3f} {fpeak / 2**20:14.1f}")
        print(line, flush=True)
        rows.append((n, per_target.median))
        db = grouped = paths = None   # free the DB before the next size
    if len(rows) > 1:
        (n0, t0), (n1, t1) = rows[0], rows[-1]
        print(f"cost ratio {n1 // n0}x DB -> {t1 / t0:.1f}x time per target (linear: {n1 / n0:.0f}x)")
    print(f"# {load_average()} at the end")


if __name__ == "__main__":
    main()
