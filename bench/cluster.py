"""The cluster path: the thread runner against local multi-process Dask clusters of 1, 2 and 4 workers,
photos on the local disk and in an S3 test server (moto), and what the single writer absorbs.

1. **Runs.** On the demo world (lite profile, or ``--profile tiny-full``: tiny open_clip and BLIP, real
   classes), every stage after ingest up to ``embed-captions`` (those whose batches compute anywhere,
   ``embed-images``, generative ``caption``, ``embed-captions``, go to the workers; neighbours, prompts and
   kNN consensus stay in the flow's process either way) runs on a fresh copy of an ingested workspace,
   per path: ``threads`` and ``dask-N`` (N spawned single-threaded worker processes of a ``LocalCluster``,
   started once and reused, so the numbers are runs, not cluster start-ups), for photos from ``local`` disk
   and from ``s3``. Paths alternate within each round, the order reversed every other round; median and range.
2. **Bytes per batch.** A pickled ``BatchJob`` (what the flow sends) and ``BatchPayload`` (what comes
   back) per stage: photos by URL (S3), by path (a local cluster that sees the folder) and with their bytes
   (``orchestration.send_photos``, an existing cluster's default).
3. **The single writer.** The flow's process commits every batch: commits per second of an ``embed-images``
   batch (vectors and problems) and of a caption batch (captions and their inputs), one transaction each,
   on this machine's disk; with the photos per batch, the photos a second it can absorb.

``python -m bench.cluster [--images N] [--rounds R] [--workers 1,2,4] [--sources local,s3]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import Spread, alternating, load_average, machine

PREP = ["ingest"]
TIMED = ["embed-images", "neighbours", "prompts", "caption", "embed-captions"]


def _sections(world: Path, data: dict, batch: int, profile: str, models: dict[str, str]) -> dict:
    # batches of ``batch`` photos in every stage (the cheap ones too), so that there are batches to spread
    sections: dict = {"data": data, "orchestration": {"batch_size": batch, "cheap_batch_size": batch},
                      "image_embedder": {"batch_size": max(1, batch // 2), "num_workers": 1}}
    if profile == "tiny-full":
        sections.update(
            image_embedder={"name": "open_clip", "model": "capsearch-tiny-clip", "pretrained": "local-dir:" + models["clip"],
                            "batch_size": max(1, batch // 2), "num_workers": 1},
            captioners={"enabled": ["knn-consensus", "blip-base"],
                        "blip-base": {"kind": "blip", "model": models["blip"], "batch_size": 8, "max_new_tokens": 8,
                                      "num_beams": 1}})
    return sections


def _tiny_models(root: Path) -> dict[str, str]:
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    from tests.fixtures.tiny_open_clip import TINY_CLIP_CONFIG
    from tests.fixtures.tiny_transformers import build_tiny_blip

    torch.manual_seed(0)
    path = root / "tiny.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(path)
    model = open_clip.create_model("tiny", pretrained=None)
    local = root / "clip"
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG,
                                                             "preprocess_cfg": dict(model.visual.preprocess_cfg)}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(local / "open_clip_model.safetensors"))
    return {"clip": str(local), "blip": str(build_tiny_blip(root / "blip"))}


def _prepared(root: Path, name: str, sections: dict, profile: str):  # type: ignore[no-untyped-def]
    from flows.api import run
    from pipeline.config_file import update_config_file
    from pipeline.workspace import Workspace

    update_config_file(root / name / "capsearch.toml", sections, profile="lite")
    ws = Workspace(root / name)
    outcome = run(ws, PREP)
    assert outcome.status == "completed", outcome
    return ws


def _timed_run(template: Path, scratch: Path, runner: str, address: str | None) -> float:
    from flows.api import run
    from pipeline.workspace import Workspace

    target = scratch / f"ws-{time.monotonic_ns()}"
    shutil.copytree(template, target)
    t0 = time.perf_counter()
    outcome = run(Workspace(target), TIMED, runner=runner, dask_address=address)
    seconds = time.perf_counter() - t0
    assert outcome.status == "completed", outcome
    shutil.rmtree(target, ignore_errors=True)
    return seconds


def bytes_per_batch(template: Path, scratch: Path) -> list[tuple[str, str, int, int, int]]:
    """(stage, how photos travel, items, job bytes, payload bytes) of each remote stage's first batch: image
    embedding on the ingested workspace, captions and caption embeddings on a copy run up to them."""
    from flows.api import run
    from pipeline.workspace import Workspace

    rows = _bytes(Workspace(template), ["embed-images"])
    upto = scratch / "bytes"
    shutil.copytree(template, upto)
    run(Workspace(upto), ["embed-images", "neighbours", "prompts"])
    rows += _bytes(Workspace(upto), ["caption"])
    run(Workspace(upto), ["caption"])
    rows += _bytes(Workspace(upto), ["embed-captions"])
    shutil.rmtree(upto, ignore_errors=True)
    return rows


def _bytes(ws, names: list[str]) -> list[tuple[str, str, int, int, int]]:  # type: ignore[no-untyped-def]
    from pipeline.locations import is_url
    from pipeline.stages.registry import pipeline_stages

    rows = []
    for st in pipeline_stages(ws, names):
        if not st.remote or st.applicable():
            continue
        batch = next((b for b in st.plan()), None)
        if batch is None:
            continue
        remote = is_url(str(ws.config.data.path))
        modes = [("url", False)] if remote else [("path", False), ("bytes", True)]
        for mode, send in modes:
            prepared = st.prepare_batch(batch, None, send)
            payload = st.compute_here(prepared.job)
            rows.append((st.label, mode, len(batch.ids), prepared.job.nbytes(), payload.nbytes()))
    return rows


def writer_rate(ws, commits: int) -> dict[str, Spread]:  # type: ignore[no-untyped-def]
    """Commits per second of synthetic embed-images and caption batches (the store's single writer)."""
    import numpy as np

    from pipeline.compute.captions import CaptionRecord, CaptionsOut
    from pipeline.compute.images import ImagesOut
    from pipeline.compute.jobs import BatchPayload
    from pipeline.stages.base import Batch, PreparedBatch
    from pipeline.stages.vision import CaptionStage, EmbedImagesStage

    n = ws.config.orchestration.batch_size
    embed, caption = EmbedImagesStage(ws), CaptionStage(ws, "knn-consensus")
    rows = ws.store.images()[:n]
    dim = 512
    rng = np.random.default_rng(0)
    out: dict[str, list[float]] = {"embed-images": [], "caption": []}
    ids = tuple(r.id for r in rows)
    for i in range(commits):
        keys = [f"{i:08d}{r.sha256[8:]}" for r in rows]
        vectors = rng.standard_normal((len(rows), dim)).astype(np.float32)
        prepared = PreparedBatch(Batch(i, ids, ""), None, (rows, len(rows)))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        embed.commit_payload(prepared, BatchPayload(i, ImagesOut(keys, vectors, {})))
        out["embed-images"].append(time.perf_counter() - t0)
        records = [CaptionRecord(r, f"caption {i} of {r}", "ok", None, 0.1, 1) for r in ids]
        prepared = PreparedBatch(Batch(i, ids, ""), None, ({r: str(i) for r in ids}, {}, 0, 0, 0))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        caption.commit_payload(prepared, BatchPayload(i, CaptionsOut(records, "bench", {})))
        out["caption"].append(time.perf_counter() - t0)
    return {k: Spread.of([1 / s for s in v]) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--sources", default="local,s3")
    parser.add_argument("--profile", choices=["lite", "tiny-full"], default="lite")
    parser.add_argument("--commits", type=int, default=50)
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w]
    sources = [s for s in args.sources.split(",") if s]

    import logging

    from distributed import LocalCluster

    from flows.runners import quiet_dask_logs
    from flows.runtime.local_server import stop_local_server
    from flows.runtime.server import prefect_api
    from flows.runtime.settings import apply_settings
    from pipeline.datasets.demo import generate_demo_world
    from pipeline.datasets.flickr8k import load_flickr8k
    from tests.fixtures.object_store import start_s3_server, stop

    print(f"# {machine()}")
    print(f"# {load_average()} at the start; {args.images} photos, batches of {args.batch_size}, {args.profile} profile")
    quiet_dask_logs()
    with tempfile.TemporaryDirectory(prefix="capsearch-bench-cluster-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        if "prefect" not in sys.modules:    # a Prefect home of its own: the bench's runs stay out of the user's
            os.environ["PREFECT_HOME"] = str(root / "prefect-home")
            os.environ.pop("PREFECT_API_URL", None)
        apply_settings()
        stack.callback(stop_local_server)
        world = root / "world"
        generate_demo_world(world, n_images=args.images, seed=7)
        models = _tiny_models(root / "models") if args.profile == "tiny-full" else {}
        datas: dict[str, dict] = {}
        if "local" in sources:
            datas["local"] = {"source": "demo", "path": str(world), "demo_images": args.images, "demo_seed": 7,
                              "n_targets": args.images // 2}
        if "s3" in sources:
            server = start_s3_server()
            stack.callback(stop, server.process)
            os.environ.update(server.env())
            items = sorted(load_flickr8k(world, name="demo").items, key=lambda i: i.id)
            photos = {Path(i.path).name: Path(i.path) for i in items}
            captions = {Path(i.path).name: i.captions for i in items[: len(items) // 2]}
            url, caps = server.upload_collection(photos, captions, "bench")
            datas["s3"] = {"source": "folder", "path": url, "captions": caps}
        # the shared local Prefect server (the workers report to it), held for the whole bench
        stack.enter_context(prefect_api(idle=5.0))
        clusters = {}
        for n in workers:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                                   silence_logs=logging.ERROR)
            stack.callback(cluster.close)
            clusters[f"dask-{n}"] = cluster.scheduler_address
        for source, data in datas.items():
            ws = _prepared(root, f"template-{source}", _sections(world, data, args.batch_size, args.profile, models),
                           args.profile)
            print(f"\n## photos from {source}: {ws.store.count_images()} photos")
            print("| stage | photos travel as | items | job bytes | payload bytes |")
            print("| --- | --- | ---: | ---: | ---: |")
            scratch = root / f"scratch-{source}"
            scratch.mkdir()
            for label, mode, items_, job, payload in bytes_per_batch(ws.root, scratch):
                print(f"| {label} | {mode} | {items_} | {job:,} | {payload:,} |")
            paths = {"threads": lambda t=ws.root: _timed_run(t, scratch, "thread", None)}
            for name, address in clusters.items():
                paths[name] = lambda t=ws.root, a=address: _timed_run(t, scratch, "dask", a)
            _timed_run(ws.root, scratch, "thread", None)        # warm-up: models loaded in this process
            for address in clusters.values():                   # and in every worker
                _timed_run(ws.root, scratch, "dask", address)
            times = alternating(paths, args.rounds)
            print("\n| runner | seconds, median (range) | vs threads | photos/s |")
            print("| --- | --- | --- | ---: |")
            for name, values in times.items():
                spread = Spread.of(values)
                ratio = Spread.of([v / b for v, b in zip(values, times["threads"])])
                print(f"| {name} | {spread.show('.2f')} | {ratio.show('.2f')}x | {args.images / spread.median:.0f} |")
            print(f"# {load_average()} after {source}")
        template = _prepared(root, "writer", _sections(world, next(iter(datas.values())), 32, "lite", {}), "lite")
        rates = writer_rate(template, args.commits)
        print("\n## the single writer: commits per second (one transaction each), batches of 32 photos")
        for label, spread in rates.items():
            print(f"- {label}: {spread.show('.0f')} commits/s = {32 * spread.median:,.0f} photos/s")
        print(f"# {load_average()} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
