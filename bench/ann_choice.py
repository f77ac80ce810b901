"""Which approximate index: FAISS IVF-Flat, FAISS HNSW-Flat or usearch, measured on the same vectors.

The collection is ``--n`` clustered unit vectors (``bench.ann_choice.clustered``: a mixture of Gaussian
clusters around random centres, as caption and image embeddings cluster by subject; uniform random vectors
have no neighbours worth the name and no index does well on them), the queries are ``--queries`` vectors
drawn the same way (not collection members). For each index, in a process of its own (started with
``subprocess``), on the same vectors:

* **build**: seconds to build (training included) on the machine's cores, the resident memory it added
  (peak, ``VmHWM`` reset before), and the size of the file it saves;
* **recall@10** against the exact top-10 (numpy, one matmul) at each search setting, and the single-query
  latency (median of the queries, one at a time: what a person's search costs);
* **incremental**: whether photos can be removed and added without a rebuild (timed for 1 % of the
  collection), and **determinism**: two builds on the same vectors return the same lists.

usearch is measured when it is importable (``pip install usearch``; not a capsearch dependency).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from bench import load_average, machine


def clustered(n: int, dim: int, seed: int, clusters: int | None = None, spread: float = 1.0) -> np.ndarray:
    """``n`` unit vectors in ``clusters`` Gaussian clusters (default: one per 1000 vectors) around random
    unit centres; ``spread`` is the noise's norm relative to the centre's (1: two photos of one cluster have
    a cosine of about 0.5, the nearest of a thousand about 0.65; MiniLM's caption neighbours look alike)."""
    rng = np.random.default_rng(seed)
    clusters = clusters or max(1, n // 1000)
    centres = np.random.default_rng(12345).standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        x = centres[rng.integers(0, clusters, m)] + rng.standard_normal((m, dim), dtype=np.float32) * (
            spread / np.sqrt(dim))
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _status(field: str) -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass


def exact_top(db: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    s = queries @ db.T
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return part


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(t.tolist())) / truth.shape[1]
                          for f, t in zip(found, truth)]))


# --- one index kind, in its own process ---------------------------------------------------------------------

def _faiss_ivf(db: np.ndarray):
    import faiss

    nlist = int(4 * np.sqrt(db.shape[0]))
    quantizer = faiss.IndexFlatIP(db.shape[1])
    index = faiss.IndexIVFFlat(quantizer, db.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = db[np.sort(rng.choice(db.shape[0], min(db.shape[0], 64 * nlist), replace=False))]
    index.cp.seed = 1234
    index.train(sample)
    index.add_with_ids(db, np.arange(db.shape[0], dtype=np.int64))

    def search(q, setting):
        index.nprobe = setting
        return index.search(q, 10)[1]

    def update(remove, add_vecs, add_ids):
        index.remove_ids(np.asarray(remove, dtype=np.int64))
        index.add_with_ids(add_vecs, add_ids)
    return index, search, (4, 8, 16, 32, 64), update, faiss.write_index


def _faiss_ivf_sq8(db: np.ndarray):
    """IVF lists of 8-bit scalar-quantised vectors (a quarter of the memory), the best 4 x 10 candidates
    re-scored exactly from the float32 vectors (what capsearch does, from the memory-mapped snapshot)."""
    import faiss

    nlist = int(4 * np.sqrt(db.shape[0]))
    quantizer = faiss.IndexFlatIP(db.shape[1])
    index = faiss.IndexIVFScalarQuantizer(quantizer, db.shape[1], nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = db[np.sort(rng.choice(db.shape[0], min(db.shape[0], 64 * nlist), replace=False))]
    index.cp.seed = 1234
    index.train(sample)
    index.add_with_ids(db, np.arange(db.shape[0], dtype=np.int64))

    def search(q, setting):
        index.nprobe = setting
        cand = index.search(q, 40)[1]
        exact = np.einsum("qd,qcd->qc", q, db[np.maximum(cand, 0)])
        exact[cand < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :10]
        return np.take_along_axis(cand, order, axis=1)

    def update(remove, add_vecs, add_ids):
        index.remove_ids(np.asarray(remove, dtype=np.int64))
        index.add_with_ids(add_vecs, add_ids)
    return index, search, (4, 8, 16, 32, 64), update, faiss.write_index


def _faiss_hnsw(db: np.ndarray):
    import faiss

    index = faiss.IndexHNSWFlat(db.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(db)

    def search(q, setting):
        index.hnsw.efSearch = setting
        return index.search(q, 10)[1]
    return index, search, (16, 32, 64, 128), None, faiss.write_index


def _usearch(db: np.ndarray):
    from usearch.index import Index

    index = Index(ndim=db.shape[1], metric="ip", dtype="f32", connectivity=16, expansion_add=128)
    index.add(np.arange(db.shape[0], dtype=np.uint64), db)

    def search(q, setting):
        index.expansion_search = setting
        m = index.search(q, 10)
        keys = np.asarray(m.keys, dtype=np.int64).reshape(len(q), -1)
        return keys

    def update(remove, add_vecs, add_ids):
        index.remove(np.asarray(remove, dtype=np.uint64))
        index.add(np.asarray(add_ids, dtype=np.uint64), add_vecs)
    return index, search, (16, 32, 64, 128), update, lambda ix, path: ix.save(path)


KINDS = {"faiss-ivf": _faiss_ivf, "faiss-ivf-sq8": _faiss_ivf_sq8, "faiss-hnsw": _faiss_hnsw, "usearch": _usearch}


def child(kind: str, n: int, dim: int, n_queries: int, once: bool = False) -> dict:
    import tempfile

    db = clustered(n, dim, seed=1)
    queries = clustered(n_queries, dim, seed=2)
    truth = exact_top(db, queries)
    _reset_peak()
    before = _status("VmRSS")
    t0 = time.perf_counter()
    index, search, settings, update, save = KINDS[kind](db)
    build = time.perf_counter() - t0
    grew = _status("VmHWM") - before
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index")
        save(index, path)
        size = os.path.getsize(path)
    out = {"kind": kind, "n": n, "dim": dim, "build s": build, "build +MB": grew, "file MB": size / 2**20,
           "data MB": db.nbytes / 2**20, "settings": {}}
    for setting in settings:
        found = search(queries, setting)
        lat = []
        for q in queries[:100]:
            t1 = time.perf_counter()
            search(q[None, :], setting)
            lat.append(time.perf_counter() - t1)
        out["settings"][str(setting)] = {"recall@10": recall(found, truth), "ms per query": 1e3 * float(np.median(lat))}
    if not once:
        again = KINDS[kind](db)
        mid = str(settings[len(settings) // 2])
        out["deterministic"] = bool(np.array_equal(again[1](queries, int(mid)), search(queries, int(mid))))
    else:
        out["deterministic"] = None
    if update is not None:
        rng = np.random.default_rng(3)
        gone = np.sort(rng.choice(n, n // 100, replace=False))
        t1 = time.perf_counter()
        update(gone, clustered(n // 100, dim, seed=4), np.arange(n, n + n // 100, dtype=np.int64))
        out["update 1% s"] = time.perf_counter() - t1
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--once", action="store_true", help="build each index once (no determinism check)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n, args.dim, args.queries, args.once)))
        return []
    print(f"# {machine()}\n# {load_average()}; {args.n:,} clustered vectors of dimension {args.dim}, "
          f"{args.queries} queries")
    results = []
    for kind in args.kinds.split(","):
        proc = subprocess.run([sys.executable, "-m", "bench.ann_choice", "--child", kind, "--n", str(args.n),
                               "--dim", str(args.dim), "--queries", str(args.queries)] + (["--once"] if args.once else []),
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            print(f"{kind}: not measured ({(proc.stderr.strip().splitlines() or ['?'])[-1]})")
            continue
        r = json.loads(lines[-1])
        results.append(r)
        print(f"{kind}: build {r['build s']:.1f} s, +{r['build +MB']:.0f} MB (data {r['data MB']:.0f} MB), file "
              f"{r['file MB']:.0f} MB, deterministic {r['deterministic']}, "
              f"update 1% {r.get('update 1% s', float('nan')):.2f} s")
        for setting, s in r["settings"].items():
            print(f"    setting {setting:>4}: recall@10 {s['recall@10']:.3f}, {s['ms per query']:.2f} ms per query")
    print(f"# {load_average()} at the end")
    return results


if __name__ == "__main__":
    main()
