"""Search latency over the whole collection against the targets-only search, on the same photos.

A synthetic workspace of N photos (10k and 30k by default), every one of them a target with one generated
caption (kNN consensus) and, for 60 % of them, five human captions: random unit vectors (384-d, MiniLM's
width) stand in for the caption embeddings, and 512-d ones for the image embeddings. Timed, in
alternating rounds on the same index objects:

* **targets scope** (the baseline, what search was before): ``SearchIndex.search(q, "knn-consensus")``, one
  document per photo;
* **collection scope**: ``SearchIndex.search(q, "captions")``, every caption of every photo (here 4x as many
  documents), each photo scored by its best caption, the hit saying which kind matched;
* **like**: ``SearchIndex.like(photo)``, image similarity plus caption similarity.

The query vector is remembered after the first call (as the TUI's repeated keystrokes are), so this times
ranking, not the text model. Also: building each index (once per process). Medians and ranges; the load
average says how busy the shared machine was.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import machine

K = 10
HUMAN_SHARE = 0.6


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_workspace(root: Path, n: int, rng: np.random.Generator):
    from pipeline.config_file import update_config_file
    from pipeline.embedders.registry import build_image_embedder
    from pipeline.hashing import hash_text
    from pipeline.keys import document_space, image_space
    from pipeline.search_service import SearchIndex
    from pipeline.stages.registry import stage_hash
    from pipeline.store_rows import ImageRow
    from pipeline.workspace import Workspace

    update_config_file(root / "capsearch.toml", {}, profile="lite")
    ws = Workspace(root)
    ids = [f"{2010 + i % 12}/{i % 28:02d}/photo_{i:06d}.jpg" for i in range(n)]
    shas = [f"{i:064x}" for i in range(n)]
    ws.store.upsert_images([ImageRow(i, i, s, 640, 480, "target") for i, s in zip(ids, shas)])
    human = {i: [f"human caption {c} of photo {k}" for c in range(5)] for k, i in enumerate(ids)
             if k % 10 < HUMAN_SHARE * 10}
    ws.store.replace_reference_captions(human)
    generated = {i: f"generated caption of photo {k}" for k, i in enumerate(ids)}
    ws.store.put_captions("knn-consensus", stage_hash(ws, "caption", "knn-consensus"),
                          [{"image_id": i, "text": t, "status": "ok"} for i, t in generated.items()])
    texts = list(generated.values()) + [t for caps in human.values() for t in caps]
    space = document_space(SearchIndex(ws, scope="targets").text_embedder.key)
    for start in range(0, len(texts), 50_000):
        chunk = texts[start:start + 50_000]
        ws.store.put_vectors(space, [hash_text(t) for t in chunk], unit_rows(rng, len(chunk), 384))
    ws.store.put_vectors(image_space(build_image_embedder(ws.config).key), shas, unit_rows(rng, n, 512))
    return ws, ids, len(texts)


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:8.2f} ms ({min(values) * 1e3:.2f}-{max(values) * 1e3:.2f})"


def main(argv: list[str] | None = None) -> None:
    from pipeline.search_service import SearchIndex

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,30000", help="photos, comma-separated")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    p.add_argument("--queries", type=int, default=10, help="queries per round and path")
    args = p.parse_args(argv)
    print(f"# search over the whole collection, {machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rng = np.random.default_rng(0)
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            ws, ids, n_docs = build_workspace(Path(tmp), n, rng)
            t0 = time.perf_counter()
            targets = SearchIndex(ws, scope="targets")
            build_t = time.perf_counter() - t0
            t0 = time.perf_counter()
            collection = SearchIndex(ws, scope="collection")
            build_c = time.perf_counter() - t0
            queries = [f"a dog number {q} in the snow" for q in range(args.queries)]
            for q in queries:                                 # embed once: the rounds time ranking only
                targets.search(q, "knn-consensus", K)
                collection.search(q, "captions", K)
            collection.like(ids[0], K)
            per_t, per_c, per_like = [], [], []
            for r in range(args.rounds):
                per_t += [t / len(queries) for t in timed(lambda: [targets.search(q, "knn-consensus", K)
                                                                    for q in queries], 1)]
                per_c += [t / len(queries) for t in timed(lambda: [collection.search(q, "captions", K)
                                                                    for q in queries], 1)]
                per_like += timed(lambda: collection.like(ids[(r * 7919) % n], K), 1)
            print(f"\n{n:,} photos, {n_docs:,} caption documents in the collection scope ({n:,} in the targets scope)")
            print(f"  index build: targets {build_t:.2f} s, collection {build_c:.2f} s")
            print(f"  per query, targets scope (one caption per photo) {ms(per_t)}")
            print(f"  per query, collection scope (every caption)      {ms(per_c)}")
            print(f"  per example, like (image + captions)             {ms(per_like)}")
            print(f"  ratio collection / targets: {statistics.median(per_c) / statistics.median(per_t):.2f}x")
            ws.store.close()
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
