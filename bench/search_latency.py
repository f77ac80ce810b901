"""Search latency: capsearch's blocked top-k against a plain numpy matmul + argsort, 10k to 1M captions.

For each collection size (10k, 100k, 1M caption embeddings) and width (384-d MiniLM, 768-d
EmbeddingGemma), random unit vectors stand in for caption embeddings. Timed per query:

* single queries: ``top_k_batch`` on a ``DistinctRows`` (what ``SearchIndex.search`` runs for a caption method) against
  ``np.argsort(-(docs @ q))[:k]``;
* batches of 400 queries (an evaluation's query set): the same on the batch against the
  same matmul + argsort, done 64 queries at a time so the baseline's score and index matrices fit in memory.

The ratio is baseline / capsearch (above 1: capsearch is faster). "grouping" is the one-off cost of
grouping the documents by vector (``DistinctRows.of``: identical vectors scored once, so they tie on
every CPU), paid when ``SearchIndex`` loads a method, not per query. Only one document matrix is held at a
time (1M x 768 float32 is 3 GB). Finally, ``SearchIndex.search`` end to end on a 10k-target workspace
with the real MiniLM query embedding: the TUI's per-keystroke cost.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import machine

K = 10
BATCH = 400
BASELINE_CHUNK = 64


def unit_rows(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + len(x)] = x
    return out


def per_call(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def baseline_top_k(docs: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), BASELINE_CHUNK):
        scores = queries[start:start + BASELINE_CHUNK] @ docs.T
        out[start:start + len(scores)] = np.argsort(-scores, axis=1)[:, :k]
    return out


def bench_size(n: int, dim: int, rng: np.random.Generator, repeats: int) -> dict:
    from pipeline.distinct import DistinctRows
    from pipeline.search import top_k_batch

    docs = unit_rows(rng, n, dim)
    queries = unit_rows(rng, BATCH, dim)
    t0 = time.perf_counter()
    index = DistinctRows.of(docs)                    # what SearchIndex builds once per method
    grouping = time.perf_counter() - t0
    one = queries[:1]
    ours_idx, _ = top_k_batch(queries[:8], index, K)
    assert np.array_equal(ours_idx, baseline_top_k(docs, queries[:8], K)), "capsearch and numpy disagree"
    single_reps = max(3, repeats if n <= 100_000 else repeats // 3)
    row = {
        "n": n, "dim": dim, "grouping": grouping,
        "single_ours": per_call(lambda: top_k_batch(one, index, K), single_reps),
        "single_numpy": per_call(lambda: np.argsort(-(docs @ one[0]))[:K], single_reps),
        "batch_ours": per_call(lambda: top_k_batch(queries, index, K), 1 if n >= 1_000_000 else 2) / BATCH,
        "batch_numpy": per_call(lambda: baseline_top_k(docs, queries, K), 1 if n >= 1_000_000 else 2) / BATCH,
    }
    del docs, index
    gc.collect()
    return row


def end_to_end(n_targets: int = 10_000, n_queries: int = 50) -> tuple[float, float, float]:
    """(seconds to build a SearchIndex, median seconds per search incl. MiniLM query embedding, median seconds of
    the ranking alone)."""
    from pipeline.config_file import update_config_file
    from pipeline.hashing import hash_text
    from pipeline.search_service import SearchIndex, document_space
    from pipeline.stages.registry import stage_hash
    from pipeline.store import ImageRow
    from pipeline.workspace import Workspace

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        update_config_file(Path(tmp) / "capsearch.toml", {}, profile="lite")
        ws = Workspace(tmp)
        ids = [f"photo_{i:06d}.jpg" for i in range(n_targets)]
        ws.store.upsert_images([ImageRow(i, i, f"{n:064x}", 640, 480, "target") for n, i in enumerate(ids)])
        captions = {i: f"synthetic caption number {n} of a photo" for n, i in enumerate(ids)}
        ws.store.put_captions("knn-consensus", stage_hash(ws, "caption", "knn-consensus"),
                              [{"image_id": i, "text": t, "status": "ok"} for i, t in captions.items()])
        index_probe = SearchIndex(ws)
        space = document_space(index_probe.text_embedder.key)
        ws.store.put_vectors(space, [hash_text(t) for t in captions.values()], unit_rows(rng, n_targets, 384))
        t0 = time.perf_counter()
        index = SearchIndex(ws)
        build = time.perf_counter() - t0
        index.search("warm up the model", "knn-consensus", K)
        times, ranking = [], []
        for q in range(n_queries):
            t0 = time.perf_counter()
            index.search(f"a dog number {q} running in the snow", "knn-consensus", K)
            times.append(time.perf_counter() - t0)
            vector = index.text_queries([f"a dog number {q} running in the snow"])      # remembered: no model call
            t0 = time.perf_counter()
            index.top_k("knn-consensus", vector, None, K)
            ranking.append(time.perf_counter() - t0)
        ws.store.close()
    return build, statistics.median(times), statistics.median(ranking)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="collection sizes, comma-separated")
    p.add_argument("--dims", default="384,768", help="embedding widths, comma-separated")
    p.add_argument("--repeats", type=int, default=15, help="timed single-query calls per size (fewer at 1M)")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the SearchIndex + MiniLM measurement")
    args = p.parse_args(argv)
    print(f"# search latency, {machine()}")
    print(f"{'captions':>9} {'dim':>4} | {'single: capsearch':>17} {'numpy':>9} {'ratio':>6} | "
          f"{'batch/query: capsearch':>22} {'numpy':>9} {'ratio':>6} | {'grouping (once)':>15}")
    rng = np.random.default_rng(0)
    for dim in (int(d) for d in args.dims.split(",")):
        for n in (int(s) for s in args.sizes.split(",")):
            r = bench_size(n, dim, rng, args.repeats)
            print(f"{n:>9,} {dim:>4} | {r['single_ours'] * 1e3:>14.2f} ms {r['single_numpy'] * 1e3:>6.2f} ms "
                  f"{r['single_numpy'] / r['single_ours']:>6.2f} | {r['batch_ours'] * 1e3:>19.3f} ms "
                  f"{r['batch_numpy'] * 1e3:>6.3f} ms {r['batch_numpy'] / r['batch_ours']:>6.2f} | "
                  f"{r['grouping'] * 1e3:>12.0f} ms", flush=True)
    if not args.no_end_to_end:
        build, per_query, ranking = end_to_end()
        print(f"SearchIndex on 10,000 targets with MiniLM (lite): index built in {build * 1e3:.0f} ms, "
              f"search {per_query * 1e3:.1f} ms per query (median of 50, query embedding included), "
              f"of which ranking {ranking * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
