"""What the crash-safe store costs: checked snapshot loads and durable batch commits, against the unchecked ways.

* **Snapshot load** (what ``SearchIndex`` does once per process for each space): ``snapshots.load_array``
  on a current snapshot, the first time in a process (manifest read, generation from the store,
  size/header/shape checks, the ids' sha256 and the CRC-32 of the whole file) and again (both
  are remembered per file), against the first format's load (``ids.json`` + ``np.load(mmap_mode="r")``,
  no check at all). Each path's page cache is warm (the file was just written and read once).
* **Batch commit**: one batch of 32 caption rows plus their problems in one transaction, as the
  caption stage writes it, with ``PRAGMA synchronous=FULL`` (the store's setting: the WAL is
  fsynced at every commit) against ``NORMAL`` (the earlier setting), alternating.

Ratios are checked / unchecked (above 1: the checks cost that factor).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import machine


def _old_load(ids_path: Path, npy: Path):
    ids = json.loads(ids_path.read_text())["ids"]
    return ids, np.load(npy, mmap_mode="r")


def snapshot_rows(sizes: list[int], dim: int, rounds: int) -> list[tuple]:
    from pipeline import snapshots
    from pipeline.snapshots import load_array
    from pipeline.store import Store

    out = []
    rng = np.random.default_rng(0)
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp)
            keys = [f"{i:016x}" for i in range(n)]
            for start in range(0, n, 100_000):
                chunk = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
                store.put_vectors("text/bench", keys[start:start + len(chunk)], chunk)
            load_array(store, "text/bench")                       # writes the snapshot
            old_ids, old_npy = Path(tmp) / "old.ids.json", Path(tmp) / "old.npy"
            ids, mat = load_array(store, "text/bench")
            np.save(old_npy, np.asarray(mat))
            old_ids.write_text(json.dumps({"ids": ids}))
            _old_load(old_ids, old_npy)
            first, again, old = [], [], []
            for _ in range(rounds):                              # alternating, best of the rounds
                snapshots._verified.clear()                      # as in a fresh process
                t = time.perf_counter()
                load_array(store, "text/bench")
                first.append(time.perf_counter() - t)
                t = time.perf_counter()
                load_array(store, "text/bench")
                again.append(time.perf_counter() - t)
                t = time.perf_counter()
                _old_load(old_ids, old_npy)
                old.append(time.perf_counter() - t)
            store.close()
        out.append((n, n * dim * 4 / 2**20, min(first), min(again), min(old)))
    return out


def commit_rows(batches: int) -> tuple[float, float]:
    from pipeline.store import Store

    times: dict[str, list[float]] = {"FULL": [], "NORMAL": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        for b in range(batches):
            for mode in ("FULL", "NORMAL") if b % 2 == 0 else ("NORMAL", "FULL"):
                store.conn.execute(f"PRAGMA synchronous={mode}")
                rows = [{"image_id": f"{mode}-{b}-{i}.jpg", "text": f"a caption number {i}", "status": "ok",
                         "settings": {"t": 1}} for i in range(32)]
                t = time.perf_counter()
                with store.transaction():
                    store.put_captions("bench", "h", rows)
                    store.clear_problems("caption", [r["image_id"] for r in rows])
                times[mode].append(time.perf_counter() - t)
        store.close()
    return statistics.median(times["FULL"]), statistics.median(times["NORMAL"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="vectors per snapshot, comma-separated")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, default=200, help="batch commits per synchronous mode")
    args = p.parse_args(argv)
    print(f"# {machine()}")
    print(f"{'vectors':>9} {'MiB':>6} {'checked first':>14} {'checked again':>14} {'unchecked':>10} {'ratio first':>12}")
    for n, mib, first, again, old in snapshot_rows([int(s) for s in args.sizes.split(",")], args.dim, args.rounds):
        print(f"{n:>9,} {mib:6.0f} {first * 1000:11.1f} ms {again * 1000:11.1f} ms {old * 1000:7.1f} ms "
              f"{first / old:12.1f}", flush=True)
    full, normal = commit_rows(args.batches)
    print(f"batch commit (32 captions + problems), median of {args.batches}: synchronous=FULL {full * 1000:.2f} ms, "
          f"NORMAL {normal * 1000:.2f} ms, ratio {full / normal:.2f}")


if __name__ == "__main__":
    main()
