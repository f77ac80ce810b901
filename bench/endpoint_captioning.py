"""Captioning through an OpenAI-compatible server against in-process, on the same photos and model.

The model is the benchmark Idefics3 of ``bench.captioning_batch`` (``--size small`` by default: the same classes
with fewer, smaller layers, so a CPU captions a photo in a fraction of a second; ``smolvlm-256m`` is
SmolVLM-256M-sized), random weights, saved to a folder; prompts are real ``vlm-neighbours`` prompts of the demo
world. Paths, each captioning **the same photos** through ``CaptionStage.run_batch`` (photos decoded in threads,
captions written to the store), alternating over ``--rounds`` rounds (order reversed every other round):

- **in-process**: ``caption:vlm-neighbours`` with ``batch_size`` = ``--batch`` (transformers' batched
  ``generate`` in the benchmark's process);
- **endpoint, concurrency C** for each C of ``--concurrency``: ``caption:vlm-neighbours-server``, the same
  model served by ``tests.fixtures.vlm_server`` (transformers behind ``/v1/chat/completions`` in a process of
  its own, batching the requests that arrive together up to ``--batch``, as in-process).

On a CPU the server *is* the model: both paths share the same cores, and the server's batching is the same
``generate`` as in-process, so concurrency can only fill its batches; what a GPU serving engine (vLLM, SGLang)
adds, continuous batching and a paged KV cache, is not here. The GPU check (``bench/gpu.py``, section
``vllm_endpoint``) measures that. The client's own cost is measured apart, against the same server started
with ``--echo`` (no model: it answers at once): wall time and the benchmark process's CPU time per request at
concurrency 1 and 16 (decode nothing: the photos are already decoded; PNG-encode at the processor's size, build
the JSON, send it, parse the answer), and the PNG encoding alone.

Every round checks that the endpoint wrote the same captions as in-process (same model, greedy).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import Spread, alternating, load_average, machine, ratios, stopwatch

LOCAL, SERVED = "vlm-neighbours", "vlm-neighbours-server"


def configure(ws, model_dir: Path, url: str, batch: int, concurrency: int, max_new_tokens: int) -> None:
    from pipeline.config_file import update_config_file

    common = {"kind": "vlm-neighbours", "model": str(model_dir), "batch_size": batch, "max_new_tokens": max_new_tokens}
    update_config_file(ws.config_path, {"captioners": {
        "enabled": [LOCAL, SERVED], LOCAL: common,
        SERVED: {**common, "backend": "endpoint", "endpoint": {"base_url": url, "concurrency": concurrency}}}})
    ws.reload_config()


def caption_all(ws, name: str, ids: list[str], model_dir: Path, url: str, batch: int, concurrency: int,
                max_new_tokens: int) -> tuple[float, dict[str, str]]:
    """(seconds, captions) of one stage batch of ``ids`` by captioner ``name`` (its earlier captions deleted)."""
    from pipeline.stages.base import Batch
    from pipeline.stages.vision import CaptionStage

    configure(ws, model_dir, url, batch, concurrency, max_new_tokens)
    ws.store.delete_captions(name)
    stage = CaptionStage(ws, name)
    with stopwatch() as t:
        result = stage.run_batch(Batch(0, tuple(ids), ""))
    assert result.done == len(ids), result
    return t[0], {i: r.text for i, r in ws.store.captions(name, stage.config_hash()).items()}


def client_overhead(images: list, prompts: list[str], model_dir: Path, rounds: int) -> dict[str, Spread]:
    """Per request against the echo server: wall and client CPU seconds at concurrency 1 and 16, and PNG encoding."""
    from pipeline.captioners.endpoint import EndpointCaptioner
    from pipeline.config import EndpointConfig
    from tests.fixtures.vlm_server import start_vlm_server

    server = start_vlm_server(None, echo=True)
    try:
        def captioner(concurrency: int) -> EndpointCaptioner:
            return EndpointCaptioner("echo", str(model_dir), EndpointConfig(base_url=server.url, model="echo",
                                                                            concurrency=concurrency))

        by_c = {c: captioner(c) for c in (1, 16)}
        by_c[1].caption_photos(images[:1], prompts[:1])            # loads the processor, checks its resize
        by_c[16].caption_photos(images[:1], prompts[:1])

        def one(c: int) -> tuple[float, float]:
            cpu, wall = time.process_time(), time.perf_counter()
            batch = by_c[c].caption_photos(images, prompts)
            assert all(o is not None and o.status == "ok" for o in batch.outcomes), batch
            return (time.perf_counter() - wall) / len(images), (time.process_time() - cpu) / len(images)

        def encode() -> float:
            with stopwatch() as t:
                for image in images:
                    by_c[1].encode(image)
            return t[0] / len(images)

        runs = alternating({"c1": lambda: one(1), "c16": lambda: one(16), "encode": encode}, rounds)
    finally:
        server.stop()
    return {"wall ms/request, concurrency 1": Spread.of([w * 1e3 for w, _ in runs["c1"]]),
            "client CPU ms/request, concurrency 1": Spread.of([c * 1e3 for _, c in runs["c1"]]),
            "wall ms/request, concurrency 16": Spread.of([w * 1e3 for w, _ in runs["c16"]]),
            "client CPU ms/request, concurrency 16": Spread.of([c * 1e3 for _, c in runs["c16"]]),
            "PNG encoding ms/photo": Spread.of([e * 1e3 for e in runs["encode"]])}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=16, help="photos every path captions (the same ones)")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--batch", type=int, default=8, help="in-process batch size, and the server's largest batch")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--size", choices=("smolvlm-256m", "small"), default="small")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (order reversed every other round)")
    args = p.parse_args(argv)
    import torch

    from bench.captioning_batch import prepare_workspace
    from pipeline.images import open_rgb
    from pipeline.stages.vision import MAX_CAPTION_SIDE, PromptsStage, collection_root
    from tests.fixtures.vlm_server import start_vlm_server

    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"# {machine()}")
    print(f"# {load_average()} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        ws = prepare_workspace(Path(tmp), args.photos, args.max_new_tokens, False, "cpu", small=args.size == "small")
        model_dir = Path(tmp) / "model"
        ids = ws.store.image_ids("target")[:args.photos]
        prompts = ws.store.prompts(PromptsStage(ws).config_hash())
        root = collection_root(ws.store)
        images = [open_rgb(root / ws.store.image(i).path, max_side=MAX_CAPTION_SIDE) for i in ids]
        overhead = client_overhead(images, [prompts[i].text for i in ids], model_dir, args.rounds)
        server = start_vlm_server(model_dir, max_batch=args.batch)
        try:
            run = {"in-process": lambda: caption_all(ws, LOCAL, ids, model_dir, server.url, args.batch, 1,
                                                     args.max_new_tokens)}
            for c in levels:
                run[f"endpoint, concurrency {c}"] = (lambda c=c: caption_all(ws, SERVED, ids, model_dir, server.url,
                                                                            args.batch, c, args.max_new_tokens))
            caption_all(ws, LOCAL, ids[:2], model_dir, server.url, args.batch, 1, args.max_new_tokens)   # warm-ups
            caption_all(ws, SERVED, ids[:2], model_dir, server.url, args.batch, 1, args.max_new_tokens)
            server.reset()
            results = alternating(run, args.rounds)
            batch_sizes = server.stats()["batch_sizes"]
        finally:
            server.stop()
    n = len(ids)
    reference = results["in-process"][0][1]
    same = all(captions == reference for rs in results.values() for _, captions in rs)
    params = "SmolVLM-256M-sized" if args.size != "small" else "small"
    print(f"# {params} Idefics3 (random weights), torch threads {torch.get_num_threads()} per process, "
          f"{args.max_new_tokens} new tokens per caption, the same {n} photos for every path, in-process batch and "
          f"server batch at most {args.batch}, {args.rounds} alternating rounds")
    base = [n / s for s, _ in results["in-process"]]
    print(f"{'path':<28} {'photos/s, median (range)':>26} {'vs in-process, per round':>26}")
    for label, rs in results.items():
        rates = [n / s for s, _ in rs]
        print(f"{label:<28} {Spread.of(rates).show('.3f'):>26} {ratios(rates, base).show('.2f') + 'x':>26}")
    print(f"the endpoint wrote the in-process captions in every round: {'yes' if same else 'NO'}")
    print(f"server batch sizes (all endpoint rounds): mean {sum(batch_sizes) / max(1, len(batch_sizes)):.1f}, "
          f"largest {max(batch_sizes, default=0)}")
    print("client overhead against the echo server (no model), per request:")
    for label, spread in overhead.items():
        print(f"  {label:<40} {spread.show('.2f')}")
    print(f"# {load_average()} at the end")
    if not same:
        raise SystemExit("the endpoint's captions differ from in-process")


if __name__ == "__main__":
    main()
