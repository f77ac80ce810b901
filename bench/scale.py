"""How the cost of each stage grows with the collection: synthetic workspaces of 1k, 10k and 100k photos.

For each size N, a folder of N small JPEGs (one 16x16 picture with a different trailer after its end
marker, so every file has its own hash and decodes in microseconds) with one generated caption each, and a
workspace on it (lite profile, N/10 targets, like a benchmark collection). Then, each in a process of its
own started with ``subprocess`` (fork + exec, nothing of the parent's threads), timed and with the peak of
its resident memory above what the process held just before the stage (imports and models loaded first;
the peak is reset through ``/proc/self/clear_refs``):

* ``ingest`` (the first one: every photo hashed and decoded) and ``ingest rescan`` (unchanged folder);
* ``neighbours`` (exact search of the N/10 targets against the 0.9 N reference photos), ``neighbours (index)``
  (the same through the approximate index, ``neighbours.index = "approximate"``: its build and recall
  measurement included), ``prompts``;
* ``embed-captions`` with the packaged MiniLM: ``knn-consensus`` (one caption per target) and ``human``
  (one per photo); up to ``--embed-up-to`` photos (default 10k: MiniLM embeds about 100-300 captions a
  second on 2 cores, so 100k human captions would take 10 minutes or more). Above it, random vectors are
  stored under the captions' hashes so that the later stages have their input, and the stage is not timed;
* ``queries`` (reference queries from the targets' human captions), ``evaluate`` (the query vectors are
  stored beforehand as random vectors: the stage's ranking and bootstrap, not MiniLM, is timed), ``report``;
* ``search``: loading the ``SearchIndex`` over the whole collection (MiniLM itself loaded before the clock),
  then 20 queries ranked exactly and through the approximate index in alternating order (query vectors
  embedded once beforehand: p50 and p95 of the ranking alone), the index's build (or load) time, size and
  recall@10 against the exact lists; and ``Store.vector_spaces()`` on its own (it counts the vectors of every
  space).

Image embeddings are random unit vectors stored under each photo's hash (``embed-images`` decodes photos;
its cost per photo is ``bench/image_embedding.py``'s), and the ``knn-consensus`` captions are written
directly (one of the photo's own words, numbered).

The growth exponent of each stage is the slope of log(seconds) against log(N) over the sizes measured:
1 is linear, 2 quadratic. Stages that compare every target with every reference photo (neighbours, and
evaluate's query x target scores) do N/10 x 0.9 N work: 2 is their expected exponent; for every other
stage anything clearly above 1 is a cost that need not be there.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import growth_exponent, load_average, machine

WORDS = ("dog cat child man woman bicycle beach street park ball red blue green small large running sitting "
         "jumping playing walking snow grass water tree bench shop window night rain umbrella car bus train "
         "field mountain river boat bridge wall door chair table flower garden sky cloud sun shadow").split()
CAPTIONER = "knn-consensus"
TARGET_SHARE = 10                  # one photo in ten is a target
SEARCHES = 20
# Stages whose work is targets x reference photos (N/10 x 0.9 N): quadratic by design.
QUADRATIC = {"neighbours", "evaluate"}
# Steps run under another configuration (the environment layer of pipeline/config.py): the neighbours again,
# through the approximate index (its build or update included), under their own configuration hash.
STEP_ENV = {"neighbours (index)": {"CAPSEARCH_NEIGHBOURS__INDEX": "approximate"}}
STEPS = ("ingest", "ingest rescan", "synthetic inputs", "neighbours", "neighbours (index)", "prompts", "embed-captions:knn-consensus",
         "embed-captions:human", "queries", "query vectors", "evaluate", "report", "search", "Store.vector_spaces()",
         "Store.has_space()")
SETUP = {"synthetic inputs", "query vectors"}


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` distinct tiny JPEGs in folders of 1000 and a captions.csv with one caption each; returns the CSV."""
    import csv

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    picture = buf.getvalue()
    rng = np.random.default_rng(seed)
    images = root / "photos"
    captions = root / "captions.csv"
    with open(captions, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        for i in range(n):
            sub = images / f"{i // 1000:03d}"
            if i % 1000 == 0:
                sub.mkdir(parents=True, exist_ok=True)
            (sub / f"IMG_{i:06d}.jpg").write_bytes(picture + f"capsearch-bench {i}".encode())
            words = rng.choice(len(WORDS), size=6)
            writer.writerow([f"{i // 1000:03d}/IMG_{i:06d}.jpg",
                             f"a {WORDS[words[0]]} and a {WORDS[words[1]]} {WORDS[words[2]]} near the "
                             f"{WORDS[words[3]]} {WORDS[words[4]]} with {WORDS[words[5]]}"])
    return captions


def configure(ws_root: Path, folder: Path, captions: Path, n: int) -> None:
    from pipeline.config_file import update_config_file

    update_config_file(ws_root / "capsearch.toml", {
        "data": {"source": "folder", "path": str(folder / "photos"), "captions": str(captions),
                 "n_targets": max(1, n // TARGET_SHARE)},
        "captioners": {"enabled": [CAPTIONER]},
    }, profile="lite")


# --- the child process: one step, timed --------------------------------------------------------------------

def _status(field: str) -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")          # resets VmHWM (the peak resident set) to the current resident set
        return True
    except OSError:
        return False


def _store_random(store, space: str, keys: list[str], dim: int, seed: int) -> None:
    """Synthetic vectors under ``keys``: clustered unit vectors (``bench.ann_choice.clustered``, one cluster per
    thousand), as embeddings cluster by subject; uniform random vectors have no neighbours worth the name, and
    no approximate index finds them."""
    from bench.ann_choice import clustered

    keys = sorted(set(keys) - store.has_vectors(space, keys))
    clusters = max(1, len(keys) // 1000)
    for start in range(0, len(keys), 50_000):
        chunk = keys[start:start + 50_000]
        store.put_vectors(space, chunk, clustered(len(chunk), dim, seed + start, clusters=clusters))


def _prepare_step(ws, step: str):
    """Build what ``step`` runs (models loaded, not timed); returns a callable doing the timed work."""
    from pipeline.hashing import hash_text
    from pipeline.stages.run import run_stage
    from pipeline.stages.registry import build_stage, stage_hash
    from pipeline.text_models import build_text_embedder

    store = ws.store
    if step in ("ingest", "ingest rescan"):
        stage = build_stage(ws, "ingest")
        return lambda: run_stage(stage)
    if step == "synthetic inputs":
        from pipeline.stages.vision import EmbedImagesStage

        def synth():
            embed = EmbedImagesStage(ws)
            rows = store.images()
            _store_random(store, embed.space, [r.sha256 for r in rows], embed.embedder.dim, 1)
            captions = store.reference_captions(store.image_ids("target"))
            store.put_captions(CAPTIONER, stage_hash(ws, "caption", CAPTIONER), [
                {"image_id": i, "text": f"{caps[0].split()[1]} number {n} seen again", "status": "ok"}
                for n, (i, caps) in enumerate(sorted(captions.items()))])
        return synth
    if step.startswith("embed-captions:"):
        stage = build_stage(ws, "embed-captions", step.split(":", 1)[1])
        stage.embedder.embed_documents(["load the model before the clock starts"])
        return lambda: run_stage(stage)
    if step == "query vectors":
        from pipeline.keys import query_space

        def queries():
            embedder = build_text_embedder(ws.config)
            rows = store.queries(stage_hash(ws, "queries"), status="ok")
            _store_random(store, query_space(embedder.key), [hash_text(r.text) for r in rows], 384, 2)
        return queries
    if step == "search":
        from pipeline.search_service import SearchIndex

        build_text_embedder(ws.config).embed_queries(["load MiniLM before the clock starts"])  # process-wide cache

        def search():
            t0 = time.perf_counter()
            index = SearchIndex(ws, exact=True)
            method = index.methods()[0]
            index.search("warm up the query model", method, 10)
            load = time.perf_counter() - t0
            queries = [f"a {WORDS[q % len(WORDS)]} near the {WORDS[(q * 7) % len(WORDS)]}" for q in range(SEARCHES)]
            for q in queries:                      # embedded once: the paths below time the ranking alone
                index.search(q, method, 10)
            # ... as vectors drawn like the synthetic captions (a MiniLM query of real words points nowhere near
            # random clusters, so it would measure the index on queries no collection has)
            from bench.ann_choice import clustered

            n_docs = len(store.image_ids())
            for i, (q, vec) in enumerate(zip(queries, clustered(len(queries), 384, 99, clusters=max(1, n_docs // 1000)))):
                index._memory[("text", q)] = vec[None, :]
            approximate = SearchIndex(ws)
            approximate.approximate = True         # whatever the threshold: both paths on the same photos
            t1 = time.perf_counter()
            approximate.search("build or load the index", method, 10)
            build = time.perf_counter() - t1
            approximate._memory = index._memory    # the same query vectors
            times: dict[str, list[float]] = {"exact": [], "approximate": []}
            found = []
            for r in range(2):                     # alternating: exact first, then approximate first
                for q in queries:
                    for name in (("exact", "approximate") if r == 0 else ("approximate", "exact")):
                        which = index if name == "exact" else approximate
                        t2 = time.perf_counter()
                        hits = which.search(q, method, 10)
                        times[name].append(time.perf_counter() - t2)
                        if r == 0:
                            found.append((name, [h.image_id for h in hits]))
            exact_lists = [ids for name, ids in found if name == "exact"]
            approx_lists = [ids for name, ids in found if name == "approximate"]
            recall = sum(len(set(a) & set(e)) for a, e in zip(approx_lists, exact_lists)) / max(
                1, sum(len(e) for e in exact_lists))
            info = approximate._indexes[method].index.info() if method in approximate._indexes else None
            out = {"index load s": load, "per search s": _quantile(times["exact"], 0.5),
                   "exact p50 s": _quantile(times["exact"], 0.5), "exact p95 s": _quantile(times["exact"], 0.95),
                   "approx p50 s": _quantile(times["approximate"], 0.5),
                   "approx p95 s": _quantile(times["approximate"], 0.95),
                   "index build s": build, "recall@10 vs exact": recall}
            if info is not None:
                out.update({"index MB": info.bytes / 2**20, "index rows": info.rows,
                            "index recall@10 (sample)": info.recall_at_10})
            return out
        return search
    if step == "Store.vector_spaces()":
        return store.vector_spaces
    if step == "neighbours (index)":
        stage = build_stage(ws, "neighbours")
        return lambda: run_stage(stage)
    if step == "Store.has_space()":
        space = build_stage(ws, "embed-captions", "human").space
        return lambda: store.has_space(space)
    stage = build_stage(ws, step)
    return lambda: run_stage(stage)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def child(workspace: Path, step: str) -> dict:
    from pipeline.workspace import Workspace

    ws = Workspace(workspace)
    work = _prepare_step(ws, step)
    reset = _reset_peak()
    before = _status("VmRSS")
    t0 = time.perf_counter()
    out = work()
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM")
    result = {"seconds": seconds, "rss_before_mb": before, "peak_mb": peak,
              "grew_mb": peak - before if reset else float("nan")}
    if isinstance(out, dict):
        result.update(out)
    elif hasattr(out, "done"):              # a StageOutcome
        result["done"] = out.done
        result["failed"] = out.failed
    ws.store.close()
    return result


def run_child(workspace: Path, step: str, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.scale", "--child", step, "--workspace", str(workspace)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                                                  "TRANSFORMERS_OFFLINE": "1",
                                                                                  "TOKENIZERS_PARALLELISM": "false",
                                                                                  **STEP_ENV.get(step, {})})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"step {step!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# --- the parent: sizes, steps, table -----------------------------------------------------------------------

def measure_size(root: Path, n: int, embed_up_to: int, timeout: float, steps: tuple[str, ...] = STEPS,
                 say=print) -> dict[str, dict]:
    from pipeline.hashing import hash_text
    from pipeline.keys import document_space
    from pipeline.snapshots import export_array
    from pipeline.text_models import build_text_embedder
    from pipeline.workspace import Workspace

    t0 = time.perf_counter()
    folder = root / f"folder-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    captions = make_folder(folder, n)
    ws_root = root / f"ws-{n}"
    configure(ws_root, folder, captions, n)
    say(f"# {n:,} photos: folder written in {time.perf_counter() - t0:.1f} s")
    results: dict[str, dict] = {}
    for step in steps:
        if step.startswith("embed-captions:") and n > embed_up_to:
            ws = Workspace(ws_root)            # random vectors for the captions, so later stages have their input
            stage_target = step.split(":", 1)[1]
            from pipeline.stages.registry import build_stage

            stage = build_stage(ws, "embed-captions", stage_target)
            texts = [t for ts in stage._captions().values() for t in ts]
            key = build_text_embedder(ws.config).key
            _store_random(ws.store, document_space(key), [hash_text(t) for t in texts], 384, 3)
            if stage.space in ws.store.vector_spaces():
                export_array(ws.store, stage.space)
            ws.store.close()
            results[step] = {"capped": True}
            say(f"  {step:<30} not timed above {embed_up_to:,} photos (random vectors stored instead)")
            continue
        r = run_child(ws_root, step, timeout)
        results[step] = r
        extra = "".join(f", {k} {v:.4g}" for k, v in r.items()
                        if isinstance(v, (int, float)) and k not in ("seconds", "peak_mb", "grew_mb", "rss_before_mb",
                                                                     "done", "failed"))
        say(f"  {step:<30} {r['seconds']:9.2f} s  peak RSS {r['peak_mb']:7.0f} MB (+{r['grew_mb']:.0f} MB){extra}"
            f"  [{load_average()}]", flush=True)
    return results


DERIVED = {"search: index load": ("search", "index load s"), "search: per query": ("search", "per search s")}


def _with_derived(table: dict[int, dict[str, dict]]) -> dict[int, dict[str, dict]]:
    """The table with the search step split into its index load and its per-query time (the step's own seconds
    are 20 queries plus the load: a constant MiniLM cost that hides how loading grows)."""
    out = {}
    for n, steps in table.items():
        out[n] = dict(steps)
        for name, (step, key) in DERIVED.items():
            if key in steps.get(step, {}):
                out[n][name] = {"seconds": steps[step][key], "grew_mb": steps[step]["grew_mb"]}
    return out


def exponents(sizes: list[int], table: dict[int, dict[str, dict]], key: str) -> dict[str, float]:
    out = {}
    table = _with_derived(table)
    for step in STEPS + tuple(DERIVED):
        pts = [(n, table[n][step][key]) for n in sizes if key in table[n].get(step, {})]
        if len(pts) >= 2:
            out[step] = growth_exponent([p[0] for p in pts], [p[1] for p in pts])
    return out


def print_table(sizes: list[int], table: dict[int, dict[str, dict]]) -> None:
    time_exp = exponents(sizes, table, "seconds")
    mem_exp = exponents(sizes, table, "grew_mb")
    head = " | ".join(f"{n:>9,}: s, +MB" for n in sizes)
    print(f"\n{'step':<30} | {head} | time exponent | memory exponent | expected")
    table = _with_derived(table)
    for step in STEPS[:STEPS.index("search") + 1] + tuple(DERIVED) + STEPS[STEPS.index("search") + 1:]:
        if not any(step in table[n] for n in sizes):
            continue
        cells = []
        for n in sizes:
            r = table[n].get(step, {})
            cells.append(f"{'not timed':>19}" if "seconds" not in r else f"{r['seconds']:>9.2f}, {r['grew_mb']:>7.0f}")
        expected = "-" if step in SETUP or step == "search" else ("2 (targets x DB)" if step in QUADRATIC else "1")
        te, me = time_exp.get(step, float("nan")), mem_exp.get(step, float("nan"))
        print(f"{step:<30} | {' | '.join(cells)} | {te:>13.2f} | {me:>15.2f} | {expected}")
    search_rows = [(n, table[n]["search"]) for n in sizes if "search" in table[n]]
    if search_rows:
        print("search: " + "; ".join(f"{n:,}: index load {r.get('index load s', float('nan')):.2f} s, "
                                     f"per search {r.get('per search s', float('nan')) * 1e3:.1f} ms"
                                     for n, r in search_rows))
    worse = [s for s, e in time_exp.items() if s not in SETUP and s != "search" and e > (2.2 if s in QUADRATIC else 1.25)]
    print("worse than expected: " + (", ".join(f"{s} ({time_exp[s]:.2f})" for s in worse) if worse else "none"))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="collection sizes, comma-separated")
    p.add_argument("--embed-up-to", type=int, default=10_000, help="time embed-captions (MiniLM) up to this size")
    p.add_argument("--root", type=Path, default=None,
                   help="where the folders and workspaces go (default: a temporary folder in /dev/shm if it exists)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per step")
    p.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    p.add_argument("--steps", default=",".join(STEPS),
                   help="steps to run, comma-separated, in pipeline order (later steps need the earlier ones' output)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.workspace, args.child)))
        return {}
    sizes = sorted(int(s) for s in args.sizes.split(","))
    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        p.error(f"unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    print(f"# {machine()}")
    print(f"# {load_average()} at the start; sizes {', '.join(f'{n:,}' for n in sizes)}; "
          f"embed-captions timed up to {args.embed_up_to:,} photos")
    shm = Path("/dev/shm")
    base = args.root or Path(tempfile.mkdtemp(prefix="capsearch-scale-", dir=shm if shm.is_dir() else None))
    table: dict[int, dict[str, dict]] = {}
    try:
        for n in sizes:
            table[n] = measure_size(base, n, args.embed_up_to, args.timeout, steps)
            shutil.rmtree(base / f"folder-{n}", ignore_errors=True)
            shutil.rmtree(base / f"ws-{n}", ignore_errors=True)
    finally:
        if args.root is None:
            shutil.rmtree(base, ignore_errors=True)
    print_table(sizes, table)
    print(f"# {load_average()} at the end")
    report = {"machine": machine(), "sizes": sizes, "steps": table,
              "time_exponents": exponents(sizes, table, "seconds"), "memory_exponents": exponents(sizes, table, "grew_mb")}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
