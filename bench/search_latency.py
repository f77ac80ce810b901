"""Search latency: capsearch's blocked top-k against numpy's top-k selection, 10k to 1M captions.

For each collection size (10k, 100k, 1M caption embeddings) and width (384-d MiniLM, 768-d
EmbeddingGemma), random unit vectors stand in for caption embeddings. Timed per query, on the same
documents and queries, in alternating rounds (order reversed every other round; median and range
over the rounds, ratios taken round by round):

* capsearch: ``top_k_batch`` on a ``DistinctRows`` (what ``SearchIndex.search`` runs for a caption method);
* the fair baseline: one matmul, ``np.argpartition`` for the k best, then a sort of those k
  (selection against selection: neither sorts every score);
* the physical bound: the matmul alone (every document vector read once and scored); no top-k can be
  cheaper, so ``capsearch / matmul`` says how much the selection and merging add;
* for reference, ``np.argsort`` of every score (the baseline an earlier version of this benchmark used,
  which measured a full sort against a selection).

Single queries, and batches of 400 queries (an evaluation's query set) reported per query; the numpy
batch baselines run 64 queries at a time so their score matrices fit in memory. "grouping" is the
one-off cost of grouping the documents by vector (``DistinctRows.of``), paid when ``SearchIndex``
loads a method, not per query. Finally, ``SearchIndex.search`` end to end on a 10k-target workspace
with the real MiniLM query embedding (the TUI's per-keystroke cost), against the MiniLM query
embedding alone (its physical bound: ranking cannot make a search cheaper than embedding the query).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import Spread, alternating, load_average, machine, ratios

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


def select_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores of each row, best first: ``argpartition`` then a sort of the k."""
    part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    best = np.take_along_axis(scores, part, axis=-1)
    return np.take_along_axis(part, np.argsort(-best, axis=-1, kind="stable"), axis=-1)


def baseline_top_k(docs: np.ndarray, queries: np.ndarray, k: int, full_sort: bool = False) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), BASELINE_CHUNK):
        scores = queries[start:start + BASELINE_CHUNK] @ docs.T
        out[start:start + len(scores)] = np.argsort(-scores, axis=1)[:, :k] if full_sort else select_top_k(scores, k)
    return out


def matmul_only(docs: np.ndarray, queries: np.ndarray) -> None:
    for start in range(0, len(queries), BASELINE_CHUNK):
        queries[start:start + BASELINE_CHUNK] @ docs.T


PATHS = ("capsearch", "argpartition", "matmul", "argsort")


def bench_size(n: int, dim: int, rng: np.random.Generator, repeats: int, rounds: int) -> dict:
    """Per path: seconds per query (single, and batch of 400 per query), one value per round."""
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
    assert np.array_equal(ours_idx, baseline_top_k(docs, queries[:8], K, full_sort=True)), "argsort disagrees"
    single_reps = max(3, repeats if n <= 100_000 else repeats // 3)
    batch_reps = 1 if n >= 1_000_000 else 2
    single = alternating({
        "capsearch": lambda: per_call(lambda: top_k_batch(one, index, K), single_reps),
        "argpartition": lambda: per_call(lambda: select_top_k(docs @ one[0], K), single_reps),
        "matmul": lambda: per_call(lambda: docs @ one[0], single_reps),
        "argsort": lambda: per_call(lambda: np.argsort(-(docs @ one[0]))[:K], single_reps),
    }, rounds)
    batch = alternating({
        "capsearch": lambda: per_call(lambda: top_k_batch(queries, index, K), batch_reps) / BATCH,
        "argpartition": lambda: per_call(lambda: baseline_top_k(docs, queries, K), batch_reps) / BATCH,
        "matmul": lambda: per_call(lambda: matmul_only(docs, queries), batch_reps) / BATCH,
        "argsort": lambda: per_call(lambda: baseline_top_k(docs, queries, K, full_sort=True), batch_reps) / BATCH,
    }, rounds)
    return {"n": n, "dim": dim, "grouping": grouping, "single": single, "batch": batch}


def end_to_end(n_targets: int = 10_000, n_queries: int = 50) -> tuple[float, float, float, float]:
    """(seconds to build a SearchIndex, median seconds per search incl. MiniLM query embedding, median seconds of
    the ranking alone, median seconds of MiniLM embedding one query alone: the bound)."""
    from pipeline.config_file import update_config_file
    from pipeline.hashing import hash_text
    from pipeline.keys import document_space
    from pipeline.search_service import SearchIndex
    from pipeline.stages.registry import stage_hash
    from pipeline.store_rows import ImageRow
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
        embedder = index.text_embedder
        times, ranking, embedding = [], [], []
        for q in range(n_queries):     # search and the bare embedding alternate, on different texts each time
            t0 = time.perf_counter()
            index.search(f"a dog number {q} running in the snow", "knn-consensus", K)
            times.append(time.perf_counter() - t0)
            vector = index.text_queries([f"a dog number {q} running in the snow"])      # remembered: no model call
            t0 = time.perf_counter()
            index.top_k("knn-consensus", vector, None, K)
            ranking.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            embedder.embed_queries([f"a cat number {q} sleeping on the sofa"])
            embedding.append(time.perf_counter() - t0)
        ws.store.close()
    return build, statistics.median(times), statistics.median(ranking), statistics.median(embedding)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="collection sizes, comma-separated")
    p.add_argument("--dims", default="384,768", help="embedding widths, comma-separated")
    p.add_argument("--repeats", type=int, default=15, help="timed single-query calls per size and round (fewer at 1M)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (at least 3 for a spread)")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the SearchIndex + MiniLM measurement")
    args = p.parse_args(argv)
    print(f"# search latency, {machine()}")
    print(f"# {load_average()} at the start; {args.rounds} alternating rounds, median (range) over rounds")
    print("# ratio = baseline / capsearch per round (above 1: capsearch is faster); bound = matmul alone / capsearch")
    results = [bench_size(n, dim, np.random.default_rng(n + dim), args.repeats, args.rounds)
               for dim in (int(d) for d in args.dims.split(",")) for n in (int(s) for s in args.sizes.split(","))]
    for mode, unit in (("single", "ms per query"), ("batch", "ms per query, 400 at once")):
        print(f"{mode}: {unit}")
        print(f"{'captions':>9} {'dim':>4} | {'capsearch':>22} | {'argpartition+sort k':>22} {'ratio':>17} | "
              f"{'matmul (bound)':>14} {'bound':>5} | {'argsort all':>11} {'ratio':>5}")
        for r in results:
            n, dim, t = r["n"], r["dim"], r[mode]
            ours = Spread.of(t["capsearch"]).scaled(1e3)
            fair = Spread.of(t["argpartition"]).scaled(1e3)
            print(f"{n:>9,} {dim:>4} | {ours.show('.3f'):>22} | {fair.show('.3f'):>22} "
                  f"{ratios(t['argpartition'], t['capsearch']).show('.2f'):>17} | "
                  f"{Spread.of(t['matmul']).median * 1e3:>14.3f} "
                  f"{ratios(t['matmul'], t['capsearch']).median:>5.2f} | "
                  f"{Spread.of(t['argsort']).median * 1e3:>11.3f} "
                  f"{ratios(t['argsort'], t['capsearch']).median:>5.2f}", flush=True)
    for r in results:
        print(f"grouping (DistinctRows.of, once per method) {r['n']:,} x {r['dim']}: {r['grouping'] * 1e3:.0f} ms")
    if not args.no_end_to_end:
        build, per_query, ranking, embedding = end_to_end()
        print(f"SearchIndex on 10,000 targets with MiniLM (lite): index built in {build * 1e3:.0f} ms, "
              f"search {per_query * 1e3:.1f} ms per query (median of 50, query embedding included), "
              f"of which ranking {ranking * 1e3:.2f} ms; MiniLM embedding one query alone (the bound) "
              f"{embedding * 1e3:.1f} ms")
    print(f"# {load_average()} at the end")


if __name__ == "__main__":
    main()
