"""What a user sees of a workspace's rankings, computed in this process, as JSON.

``python -m tests.kernel_probe WORKSPACE OUT.json`` recomputes, from what the workspace stores (captions,
queries, caption/query/image vectors), and writes to OUT.json:

* ``evaluation``: every method's metrics with their intervals and paired differences;
* ``rankings``: every evaluation query's expected rank of its true photo and the stored top ids;
* ``search``: for the first evaluation queries and every method, the ids ``SearchIndex.search`` lists and
  ``SearchIndex.rank_of`` of the true photo, in the targets scope and over the whole collection (with the kind
  of caption that matched), and the photos ``SearchIndex.like`` lists for the first photos;
* ``neighbours``: the neighbour ids of every target in a reference DB where every third photo appears twice
  (duplicate photos: identical vectors);
* ``blas_core``: the BLAS kernel numpy ran.

Scores are left out: a product may differ in its last bit between kernels; what is listed may not.
``tests/test_kernel_independence.py`` runs it under two kernels (``OPENBLAS_CORETYPE``) and compares.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SEARCHED_QUERIES = 12


def probe(root: Path) -> dict:
    import numpy as np

    from pipeline.evaluation import current_eval_hash, run_evaluation
    from pipeline.neighbours import find_neighbours
    from pipeline.search_service import SearchIndex
    from pipeline.stages.registry import stage_hash
    from pipeline.stages.registry import build_stage
    from pipeline.workspace import Workspace
    from tests.blas import blas_core

    ws = Workspace(root)
    store = ws.store
    eval_hash = current_eval_hash(ws)
    result = run_evaluation(ws, eval_hash).as_dict()
    for volatile in ("created_at", "seconds"):
        result.pop(volatile)
    rankings = [[r.method, r.query_kind, r.image_id, r.rank, r.top_ids]
                for r in store.rankings(eval_hash)]

    index = SearchIndex(ws, scope="targets")
    queries = store.queries(stage_hash(ws, "queries"), kind="detail", status="ok")[:SEARCHED_QUERIES]
    search = [[method, q.text, [h.image_id for h in index.search(q.text, method, k=10)],
               index.rank_of(q.text, method, q.image_id)]
              for method in index.methods() for q in queries]

    collection = SearchIndex(ws, scope="collection")
    search += [[f"collection:{method}", q.text,
                [(h.image_id, h.matched) for h in collection.search(q.text, method, k=10)],
                collection.rank_of(q.text, method, q.image_id)]
               for method in collection.methods() for q in queries]
    search += [["like", photo, [(h.image_id, h.matched) for h in collection.like(photo, 10).hits], 0.0]
               for photo in collection.photo_ids[:SEARCHED_QUERIES]]

    stage = build_stage(ws, "neighbours")
    db_ids, db_shas, _ = stage.reference_matrix()
    db_keys, db_vectors = store.get_vectors(stage.embed.space, sorted(set(db_shas)))
    db_row = {k: i for i, k in enumerate(db_keys)}
    db = db_vectors[[db_row[sha] for sha in db_shas]]
    copies = np.arange(0, len(db_ids), 3)
    db_ids = list(db_ids) + [f"{db_ids[i]}~copy" for i in copies]
    db = np.concatenate([db, db[copies]])
    shas = {img.id: img.sha256 for img in store.images(split="target")}
    keys, vectors = store.get_vectors(stage.embed.space, sorted(set(shas.values())))
    row = {k: i for i, k in enumerate(keys)}
    targets = sorted(shas)
    found = find_neighbours(vectors[[row[shas[t]] for t in targets]], db, ws.config.neighbours.k,
                            target_ids=targets, db_ids=db_ids)
    neighbours = dict(zip(targets, found.ids(db_ids)))
    return {"blas_core": blas_core(), "evaluation": result, "rankings": rankings, "search": search,
            "neighbours": neighbours}


if __name__ == "__main__":
    workspace, out = sys.argv[1:3]
    Path(out).write_text(json.dumps(probe(Path(workspace)), indent=1, sort_keys=True))
