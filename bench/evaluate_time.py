"""The time of a whole ``evaluate`` on 400 targets x 2 query kinds x 6 captioners (+ the oracle).

A temporary workspace gets 400 target photos (rows only), the six captioners of the study enabled with a
caption for every target, five reference captions per target and 800 evaluation queries; every caption,
reference caption and query has a random 384-d unit vector stored under MiniLM's key, so the timed run is
the evaluate stage itself: configuration hashing, loading the snapshots, 7 methods x 2 kinds of scoring,
ranking, 1000 bootstrap resamples per metric with the paired test, and writing rankings and metrics.
A second path leaves the query vectors out, so MiniLM embeds the 800 queries too (what a first real run pays).

There is no other tool doing the same job to compare with, so the baseline is the arithmetic the result
needs, in plain numpy on vectors already in memory: for each of the 14 method/kind pairs, one matmul of
the 400 queries against the 400 documents, each query's rank of its own photo, Recall@1/5/10, MRR and
median rank, and 1000 bootstrap resamples of each metric (vectorised). ``stage / arithmetic`` is what
the stage adds: reading and hashing its inputs, the store, snapshots, the paired tests, writing results.
Paths alternate over the rounds (order reversed every other round) on workspaces built the same way
(building is not timed); median and range over the rounds.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench import Spread, alternating, load_average, machine, ratios, stopwatch

CAPTIONERS = ["vlm-neighbours", "vlm-plain", "blip-base", "blip-large", "vit-gpt2", "knn-consensus"]


def _unit(rng: np.random.Generator, n: int, dim: int = 384) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_workspace(root: Path, n_targets: int, store_query_vectors: bool, seed: int = 0):
    from pipeline.config_file import update_config_file
    from pipeline.hashing import hash_text
    from pipeline.keys import document_space, query_space
    from pipeline.stages.registry import stage_hash
    from pipeline.store_rows import ImageRow
    from pipeline.text_models import build_text_embedder
    from pipeline.workspace import Workspace

    rng = np.random.default_rng(seed)
    update_config_file(root / "capsearch.toml", {"captioners": {"enabled": CAPTIONERS},
                                                 "evaluate": {"extra_methods": ["oracle"]}}, profile="lite")
    ws = Workspace(root)
    store = ws.store
    ids = [f"photo_{i:05d}.jpg" for i in range(n_targets)]
    store.upsert_images([ImageRow(i, i, f"{n:064x}", 640, 480, "target") for n, i in enumerate(ids)])
    refs = {i: [f"reference caption {j} of photo {n}" for j in range(5)] for n, i in enumerate(ids)}
    store.replace_reference_captions(refs)
    texts = [t for caps in refs.values() for t in caps]
    for c in CAPTIONERS:
        captions = {i: f"{c} says photo {n} shows something" for n, i in enumerate(ids)}
        store.put_captions(c, stage_hash(ws, "caption", c),
                           [{"image_id": i, "text": t, "status": "ok"} for i, t in captions.items()])
        texts += list(captions.values())
    key = build_text_embedder(ws.config).key
    store.put_vectors(document_space(key), [hash_text(t) for t in texts], _unit(rng, len(texts)))
    rows, queries = [], []
    for n, i in enumerate(ids):
        for kind in ("short", "detail"):
            text = f"{kind} query for photo {n}"
            rows.append({"image_id": i, "kind": kind, "generator": "reference", "text": text, "status": "ok",
                         "source_caption_idx": n % 5})
            queries.append(text)
    store.put_queries(stage_hash(ws, "queries"), rows)
    if store_query_vectors:
        store.put_vectors(query_space(key), [hash_text(q) for q in queries], _unit(rng, len(queries)))
    return ws


def time_evaluate(n_targets: int, store_query_vectors: bool) -> tuple[float, int]:
    from pipeline.evaluation import load_evaluation
    from pipeline.stages.run import run_stage
    from pipeline.stages.registry import build_stage

    with tempfile.TemporaryDirectory() as tmp:
        ws = build_workspace(Path(tmp), n_targets, store_query_vectors)
        with stopwatch() as t:
            run_stage(build_stage(ws, "evaluate"))
        result = load_evaluation(ws)
        pairs = len(result.methods) * len(result.kinds)
        ws.store.close()
    return t[0], pairs


def numpy_arithmetic(n_targets: int, pairs: int = 2 * (len(CAPTIONERS) + 1), ks=(1, 5, 10), n_boot: int = 1000,
                     seed: int = 0) -> float:
    """Seconds for the evaluation's arithmetic alone, in plain numpy (see the module doc)."""
    rng = np.random.default_rng(seed)
    queries = [_unit(rng, n_targets) for _ in range(pairs)]
    docs = [_unit(rng, n_targets) for _ in range(pairs)]
    with stopwatch() as t:
        boot = np.random.default_rng(seed).integers(0, n_targets, size=(n_boot, n_targets))
        for q, d in zip(queries, docs):
            scores = q @ d.T
            own = scores[np.arange(n_targets), np.arange(n_targets)]
            ranks = (scores > own[:, None]).sum(axis=1) + 1
            per_query = [ranks <= k for k in ks] + [1.0 / ranks]
            for values in per_query:
                values = values.astype(np.float64)
                values.mean(), values[boot].mean(axis=1)
            np.median(ranks), np.median(ranks[boot], axis=1)
    return t[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=400)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    print(f"# evaluate time, {machine()}")
    print(f"# {load_average()} at the start")
    from pipeline.config import Config
    from pipeline.text_models import build_text_embedder

    build_text_embedder(Config()).embed_queries(["load the model once, outside the timings"])
    pairs: list[int] = []

    def stage(stored: bool):
        def run() -> float:
            seconds, n = time_evaluate(args.targets, store_query_vectors=stored)
            pairs.append(n)
            return seconds
        return run

    t = alternating({"stored": stage(True), "embed queries": stage(False),
                     "arithmetic": lambda: numpy_arithmetic(args.targets)}, args.rounds)
    print(f"evaluate, {args.targets} targets x 2 kinds x {len(CAPTIONERS)} captioners + oracle ({max(pairs)} method/kind "
          f"pairs, 1000 bootstrap resamples), {args.rounds} alternating rounds, seconds, median (range):")
    print(f"  the stage, every vector stored:           {Spread.of(t['stored']).show('.2f')}")
    print(f"  the stage, MiniLM embedding the {2 * args.targets} queries first: {Spread.of(t['embed queries']).show('.2f')}")
    print(f"  the arithmetic alone in numpy (baseline): {Spread.of(t['arithmetic']).show('.3f')}")
    print(f"  stage (stored) / arithmetic: {ratios(t['stored'], t['arithmetic']).show('.1f')}")
    print(f"# {load_average()} at the end")


if __name__ == "__main__":
    main()
