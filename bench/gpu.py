"""One GPU check, ready to run on a CUDA machine without network: ``python -m bench.gpu`` (or bench/gpu_check.sh).

Sections, each recorded with its status (``ok``, ``failed`` with the error, or ``skipped`` with the reason):

* ``environment``: torch, CUDA, every visible GPU and its memory;
* ``image_embedding``: capsearch's open_clip embedder on a ViT-B-32 (random weights, built offline), the
  same photos one at a time against batches of ``--batch``;
* ``captioners``: capsearch's captioner classes on models of the real sizes with random weights: a
  SmolVLM-256M-sized Idefics3 (``vlm-neighbours``, with ~600-token neighbour prompts), a BLIP-base-sized
  BLIP and a ViT-GPT2-sized VisionEncoderDecoder, each generating for the same photos one at a time
  against in batches (``generate_ids``: the processor and ``generate``, where batching acts), in
  bf16 (fp16 where the GPU has no bf16) on CUDA, float32 on CPU. Target on a GPU: at least 5x;
* ``oom_halving``: a real CUDA out-of-memory error through capsearch's own ``BatchLimit``/``run_chunks``:
  every item of a chunk allocates a share of the free GPU memory, the configured batch needs about 2.7x
  what is free, so the allocator fails until halving brings the chunk under it; the check asserts the
  halving sequence, that every item was processed once, and that later chunks start at the lowered size;
* ``dask_runner``: capsearch's local Dask cluster (``flows.runners.local_cluster``: one single-threaded
  worker process per visible GPU, ``CUDA_VISIBLE_DEVICES`` pinned), each worker asked what it sees and
  to multiply on its device; then the real ``pipeline`` flow with ``--runner dask`` on a small demo world
  (ingest and embed-images; on CUDA the ViT-B-32 embedder on the GPU workers);
* ``vllm_endpoint``: where vLLM is installed, the SmolVLM-256M-sized model served from its local folder by
  ``vllm serve`` and captioned through capsearch's endpoint captioner (``backend = "endpoint"``) at
  concurrency 16 and 64, against in-process batched ``generate`` on the same photos and prompts; skipped,
  with the reason, where vLLM is not installed (no ``vllm`` on PATH, nor ``$VLLM``) or on a CPU.

Writes ``gpu_check.json`` and ``gpu_check.md`` (one table) to ``--out`` (default ``$OUT``, else
``outputs/gpu-check``). ``--quick`` shrinks models and counts so the whole check runs in a minute or two on
a CPU (``--device cpu --quick`` is what ``make bench`` runs here: it checks the script, its numbers say
nothing about a GPU). A full run on one GPU is planned to take 4-6 minutes; ``--budget`` (default 450 s)
skips the sections that would start after it, saying so. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from bench import load_average, machine

TARGET_SPEEDUP = 5.0


class SectionSkipped(Exception):
    """A section that cannot run on this machine, with the reason (recorded as skipped, not as failed)."""


class Check:
    """Runs sections within a time budget and records each one's outcome."""

    def __init__(self, budget_s: float):
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.sections: dict[str, dict[str, Any]] = {}

    def section(self, name: str, fn: Callable[[], dict[str, Any]], needs_cuda: bool = False,
                cuda: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        if needs_cuda and not cuda:
            self.sections[name] = {"status": "skipped", "reason": "needs a CUDA GPU (torch.cuda.is_available() is False)"}
        elif elapsed > self.budget_s:
            self.sections[name] = {"status": "skipped", "reason": f"time budget of {self.budget_s:.0f} s spent "
                                                                  f"({elapsed:.0f} s elapsed)"}
        else:
            t0 = time.monotonic()
            print(f"[{elapsed:6.1f} s] {name} ...", flush=True)
            try:
                result = fn()
                self.sections[name] = {"status": "ok", **result}
            except SectionSkipped as why:
                self.sections[name] = {"status": "skipped", "reason": str(why)}
            except Exception as exc:  # noqa: BLE001 - a section's failure is recorded and the check goes on
                self.sections[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                       "traceback": traceback.format_exc(limit=6)}
            self.sections[name]["seconds"] = round(time.monotonic() - t0, 2)
        s = self.sections[name]
        print(f"         {name}: {s['status']}" + (f" ({s.get('reason') or s.get('error')})" if s["status"] != "ok" else ""),
              flush=True)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(device: str, fn: Callable[[], Any]) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _photos(n: int, side: int = 480) -> list:
    """``n`` different RGB photos (gradients and noise), as PIL images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side * 3 // 4, 0:side]
    out = []
    for i in range(n):
        base = np.stack([(x * (i % 7 + 1)) % 256, (y * (i % 5 + 2)) % 256, ((x + y) * (i % 3 + 1)) % 256], axis=-1)
        out.append(Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)))
    return out


def _one_vs_batched(device: str, n: int, batch: int, run: Callable[[list[int]], Any]) -> dict[str, Any]:
    """Items 0..n-1 one at a time and in batches of ``batch`` (after a warm-up of each), in alternating order
    over two rounds: photos per second and the speed-up (median of the rounds)."""
    import statistics

    run([0])
    run(list(range(min(batch, n))))
    ones, batches = [], []
    for r in range(2):
        order = ("one", "batched") if r == 0 else ("batched", "one")
        for mode in order:
            if mode == "one":
                ones.append(_timed(device, lambda: [run([i]) for i in range(n)]))
            else:
                batches.append(_timed(device, lambda: [run(list(range(s, min(n, s + batch)))) for s in range(0, n, batch)]))
    one, batched = statistics.median(ones), statistics.median(batches)
    return {"items": n, "batch": batch, "one_at_a_time_per_s": n / one, "batched_per_s": n / batched,
            "speedup": one / batched, "rounds": {"one_s": ones, "batched_s": batches}}


# --- sections ---------------------------------------------------------------------------------------------

def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            gpus.append({"index": i, "name": props.name, "memory_gib": round(total / 2**30, 1),
                         "free_gib": round(free / 2**30, 1), "bf16": torch.cuda.is_bf16_supported()})
    return {"machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.version.cuda, "device": device, "gpus": gpus,
            "torch_threads": torch.get_num_threads(), "load": load_average()}


SMALL_CLIP = "capsearch-bench-small-clip"           # --quick: same classes, a few small layers


def image_embedding(device: str, dtype: str, quick: bool, work: Path) -> dict[str, Any]:
    import open_clip
    import torch
    from safetensors.torch import save_file

    from pipeline.embedders.open_clip_embedder import OpenClipEmbedder

    name = "ViT-B-32"
    if quick:
        name = SMALL_CLIP
        config = work / f"{SMALL_CLIP}.json"
        config.write_text(json.dumps({
            "embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}),
            encoding="utf-8")
        open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    weights = work / "vit-b-32-random.safetensors" if not quick else work / "small-clip-random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    del model
    n, batch = (16, 8) if quick else (256, 64)
    embedder = OpenClipEmbedder(name, str(weights), device=device, dtype=dtype, batch_size=batch).load()
    photos = _photos(n, 320)
    out = _one_vs_batched(device, n, batch, lambda idx: embedder.embed_images([photos[i] for i in idx]))
    return {"model": f"open_clip {name} (random weights)", "dtype": str(embedder._dtype), **out}


def _vlm(work: Path, quick: bool) -> Path:
    from bench.captioning_batch import build_model
    from tests.fixtures.tiny_transformers import CORPUS

    corpus = CORPUS * 20 + [f"a photo of {w} number {i}" for i, w in enumerate(" ".join(CORPUS).split())]
    return build_model(work / "smolvlm", corpus, split_images=False, small=quick)


def _blip(work: Path, quick: bool) -> Path:
    """BLIP-base-sized (ViT-B/16 at 384 px, a 12-layer BERT-base text decoder) unless ``quick``."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    torch.manual_seed(0)
    vocab_size = 30524                              # BLIP-base's
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]", ".", ","]
    vocab += [f"w{i}" for i in range(vocab_size - len(vocab))]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, bos_token="[DEC]", extra_special_tokens=["[ENC]"])
    side = 64 if quick else 384
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": side, "width": side}), tokenizer=tokenizer)
    ids = tokenizer.convert_tokens_to_ids
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    vision = dict(image_size=side, patch_size=16, initializer_range=0.02, **(small if quick else {}))
    text = dict(vocab_size=len(tokenizer), bos_token_id=ids("[DEC]"), sep_token_id=ids("[SEP]"),
                pad_token_id=ids("[PAD]"), eos_token_id=ids("[SEP]"),
                **(dict(small, encoder_hidden_size=64) if quick else {}))
    model = BlipForConditionalGeneration(BlipConfig(vision_config=vision, text_config=text,
                                                    **({"projection_dim": 64} if quick else {})))
    out = work / "blip"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _vit_gpt2(work: Path, quick: bool) -> Path:
    """ViT-GPT2-sized (ViT-base 224 px encoder, GPT-2 124M decoder) unless ``quick``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (GPT2Config, PreTrainedTokenizerFast, VisionEncoderDecoderConfig, VisionEncoderDecoderModel,
                              ViTConfig, ViTImageProcessor)

    from tests.fixtures.tiny_transformers import CORPUS

    torch.manual_seed(0)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                                 show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    vocab_size = 50257                              # GPT-2's: every generated id decodes
    tokenizer.add_tokens([f"fill{i}" for i in range(vocab_size - len(tokenizer))])
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    side = 64 if quick else 224
    vit = ViTConfig(image_size=side, patch_size=16, **(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                            num_attention_heads=2) if quick else {}))
    gpt2 = GPT2Config(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                      **(dict(n_embd=64, n_layer=2, n_head=2) if quick else {}))
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(vit, gpt2)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = eos
    model = VisionEncoderDecoderModel(config=config)
    for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, eos)
    out = work / "vit-gpt2"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(out)
    return out


def _neighbour_prompt(i: int) -> str:
    from tests.fixtures.tiny_transformers import CORPUS

    lines = [f"- {CORPUS[(i + j) % 6]}, seen from the {'left right front back'.split()[j % 4]} side number {j}"
             for j in range(30 + i % 7)]
    return "Captions of similar photos:\n" + "\n".join(lines) + "\nWrite one caption for this photo."


def captioners(device: str, dtype: str, quick: bool, work: Path) -> dict[str, Any]:
    from pipeline.captioners.blip import BlipCaptioner
    from pipeline.captioners.vit_gpt2 import VitGpt2Captioner
    from pipeline.captioners.vlm import VLMCaptioner

    n, batch, new_tokens = (4, 4, 6) if quick else (32, 16, 24)
    photos = _photos(n)
    prompts = [_neighbour_prompt(i) for i in range(n)]
    size = lambda real: "quick: small layers" if quick else real  # noqa: E731
    models = {
        f"vlm-neighbours (Idefics3, {size('SmolVLM-256M-sized')})": (lambda: VLMCaptioner("vlm-neighbours", str(_vlm(work, quick)),
                                                                              device=device, dtype=dtype,
                                                                              max_new_tokens=new_tokens), True),
        f"blip-base (BLIP, {size('BLIP-base-sized')})": (lambda: BlipCaptioner("blip-base", str(_blip(work, quick)), device=device,
                                                              dtype=dtype, max_new_tokens=new_tokens), False),
        f"vit-gpt2 (ViT + GPT-2, {size('ViT-GPT2-sized')})": (lambda: VitGpt2Captioner("vit-gpt2", str(_vit_gpt2(work, quick)), device=device,
                                                               dtype=dtype, max_new_tokens=new_tokens), False),
    }
    out: dict[str, Any] = {"photos": n, "batch": batch, "max_new_tokens": new_tokens, "models": {}}
    for label, (build, needs_prompts) in models.items():
        try:
            captioner = build()
            params = sum(p.numel() for p in captioner.model.parameters()) / 1e6

            def run(idx: list[int], c=captioner, np_=needs_prompts) -> Any:
                return c.generate_ids([photos[i] for i in idx], [prompts[i] for i in idx] if np_ else None)

            result = _one_vs_batched(device, n, batch, run)
            out["models"][label] = {"status": "ok", "parameters_m": round(params, 1),
                                    "generation": captioner.generation.as_dict(),
                                    "dtype": str(captioner.placement[1]), **result}
            del captioner
        except Exception as exc:  # noqa: BLE001 - one model failing does not stop the others
            out["models"][label] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                    "traceback": traceback.format_exc(limit=6)}
        finally:
            from pipeline.models.cache import evict

            evict()
            _free(device)
    failed = [k for k, v in out["models"].items() if v["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} failed: " + "; ".join(out["models"][k]["error"] for k in failed))
    return out


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def oom_halving(device: str) -> dict[str, Any]:
    import torch

    from pipeline.models.batch_limit import BatchLimit, run_chunks

    _free(device)
    free, total = torch.cuda.mem_get_info()
    configured = 64
    per_item = int(free / (configured / 2.7))          # 64 items need ~2.7x what is free: 32 too (1.35x), 16 fits
    per_item -= per_item % 1024
    n_items = 3 * configured
    tried: list[int] = []
    lowered: list[int] = []
    processed: list[int] = []

    def call(start: int, stop: int) -> int:
        tried.append(stop - start)
        held = []
        for _ in range(start, stop):                   # allocate until it fits or the allocator gives up
            block = torch.empty(per_item, dtype=torch.uint8, device=device)
            block.fill_(1)
            held.append(block)
        torch.cuda.synchronize()
        processed.extend(range(start, stop))
        del held
        return stop - start

    limit = BatchLimit(configured)
    chunks = list(run_chunks(n_items, limit, call, on_lowered=lowered.append))
    _free(device)
    sizes = [c.stop - c.start for c in chunks]
    ok = (sorted(processed) == list(range(n_items)) and all(not c.out_of_memory for c in chunks)
          and lowered[:2] == [32, 16] and limit.size == 16 and set(sizes) == {16})
    if not ok:
        raise AssertionError(f"unexpected halving: tried {tried}, lowered {lowered}, chunks {sizes}, "
                             f"processed {len(processed)} of {n_items}")
    return {"free_gib": round(free / 2**30, 2), "total_gib": round(total / 2**30, 2),
            "per_item_gib": round(per_item / 2**30, 3), "configured": configured, "items": n_items,
            "tried": tried, "lowered_to": lowered, "final_limit": limit.size, "chunks": len(chunks)}


def _probe_worker() -> dict[str, Any]:
    """What a Dask worker sees: its pinned GPU, and that it can compute there."""
    import os as os_

    import torch

    info: dict[str, Any] = {"pid": os_.getpid(), "CUDA_VISIBLE_DEVICES": os_.environ.get("CUDA_VISIBLE_DEVICES"),
                            "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    dev = "cuda" if info["cuda_devices"] else "cpu"
    x = torch.randn(1024, 1024, device=dev)
    info["matmul_ok"] = bool(torch.isfinite(x @ x).all())
    info["device_name"] = torch.cuda.get_device_name(0) if info["cuda_devices"] else "cpu"
    return info


def dask_runner(device: str, quick: bool, work: Path, vit_weights: Path | None) -> dict[str, Any]:
    from distributed import Client

    from flows.api import run
    from flows.runners import local_cluster, visible_gpus
    from pipeline.config_file import update_config_file
    from pipeline.datasets.demo import generate_demo_world
    from pipeline.workspace import Workspace

    gpus = visible_gpus() if device.startswith("cuda") else []
    with local_cluster(gpus) as address:
        with Client(address) as client:
            workers = sorted(client.scheduler_info()["workers"])
            probes = client.run(_probe_worker)
    seen = sorted(str(p["CUDA_VISIBLE_DEVICES"]) for p in probes.values())
    expected = sorted(str(g) for g in gpus) if gpus else ["None"]
    if len(workers) != max(1, len(gpus)) or seen != expected or not all(p["matmul_ok"] for p in probes.values()):
        raise AssertionError(f"workers {len(workers)} for {len(gpus)} GPUs; they see {seen}, expected {expected}")
    n_images = 24 if quick else 256
    world = work / "world"
    generate_demo_world(world, n_images=n_images, seed=7)
    embedder: dict[str, Any] = {"name": "classical", "num_workers": 0}
    if gpus and vit_weights is not None:
        embedder = {"name": "open_clip", "model": "ViT-B-32", "pretrained": str(vit_weights), "batch_size": 64,
                    "num_workers": 2}
    update_config_file(work / "ws" / "capsearch.toml", {
        "data": {"source": "demo", "path": str(world), "demo_images": n_images, "demo_seed": 7,
                 "n_targets": n_images // 4},
        "image_embedder": embedder, "runtime": {"device": "cuda" if gpus else "cpu"}}, profile="lite")
    ws = Workspace(work / "ws")
    t0 = time.perf_counter()
    summary = run(ws, ["ingest", "embed-images"], runner="dask", record_progress=False)
    seconds = time.perf_counter() - t0
    stages = {s.label if hasattr(s, "label") else str(i): getattr(s, "items", None) for i, s in enumerate(summary.stages)}
    embedded = len(ws.store.has_vectors(_image_space(ws), [r.sha256 for r in ws.store.images()]))
    ws.store.close()
    if embedded != n_images:
        raise AssertionError(f"the dask run embedded {embedded} of {n_images} photos")
    return {"gpus": gpus, "workers": len(workers), "probes": list(probes.values()), "flow_seconds": round(seconds, 2),
            "flow_stages": stages, "photos_embedded": embedded, "embedder": embedder["name"]}


def _image_space(ws) -> str:
    from pipeline.stages.vision import EmbedImagesStage

    return EmbedImagesStage(ws).space


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_group(proc: Any, grace: float = 30.0) -> None:
    """SIGTERM to the process group ``proc`` leads, SIGKILL to what is left of it after ``grace`` seconds; returns once
    the group is empty, so nothing it started lingers."""
    import signal

    def alive() -> bool:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if not alive():
            return
        os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def vllm_endpoint(device: str, dtype: str, quick: bool, work: Path) -> dict[str, Any]:
    """The SmolVLM-256M-sized model (random weights, a local folder) served by ``vllm serve``, captioned through
    capsearch's endpoint captioner at several concurrencies, against in-process batched ``generate`` on the same
    photos and prompts (alternating, two rounds). Skipped, saying so, where vLLM is not installed."""
    import shutil
    import statistics
    import subprocess
    import urllib.request

    exe = os.environ.get("VLLM") or shutil.which("vllm")
    if exe is None:
        raise SectionSkipped("vllm is not installed here (no `vllm` on PATH): `pip install vllm` on the GPU machine, "
                             "or set VLLM=/path/to/vllm for one in another environment (capsearch only talks HTTP "
                             "to it), and run the check again")
    if not device.startswith("cuda"):
        raise SectionSkipped(f"vLLM serves on a CUDA GPU; this check runs on {device}")
    import torch

    from pipeline.captioners.endpoint import EndpointCaptioner
    from pipeline.captioners.vlm import VLMCaptioner
    from pipeline.config import EndpointConfig

    model_dir = _vlm(work, quick)
    n, batch, new_tokens, levels = (8, 4, 8, (4,)) if quick else (64, 16, 24, (16, 64))
    photos, prompts = _photos(n), [_neighbour_prompt(i) for i in range(n)]
    served_dtype = dtype if dtype in ("bfloat16", "float16", "float32") else \
        ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    port, name = _free_port(), "smolvlm-random"
    log_path = work / "vllm.log"
    command = [exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--served-model-name", name,
               "--dtype", served_dtype, "--max-model-len", "4096", "--gpu-memory-utilization", "0.5", "--enforce-eager"]
    # under flows.runtime.parent_watch, in a session of its own: stopped with its group here, and by the watcher if this
    # process dies first (even by SIGKILL)
    watched = [sys.executable, "-m", "flows.runtime.parent_watch", str(os.getpid()), "bench._child", *command]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(watched, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=Path(__file__).resolve().parents[1])
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"vllm serve ended with code {proc.returncode} before answering: {tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > 300:
                raise RuntimeError("vllm serve did not answer within 300 s")
            time.sleep(2)
        startup = time.monotonic() - started
        local = VLMCaptioner("vlm-neighbours", str(model_dir), device=device, dtype=served_dtype,
                             max_new_tokens=new_tokens)
        served = {c: EndpointCaptioner("vlm-neighbours", str(model_dir), EndpointConfig(
            base_url=f"http://127.0.0.1:{port}/v1", model=name, concurrency=c, timeout=300, max_retries=0),
            max_new_tokens=new_tokens) for c in levels}

        def in_process() -> tuple[float, list[str]]:
            texts: list[str] = []
            seconds = _timed(device, lambda: [texts.extend(local.caption(photos[s:s + batch], prompts[s:s + batch]))
                                              for s in range(0, n, batch)])
            return seconds, texts

        def endpoint(c: int) -> tuple[float, list[str], int]:
            out: list[Any] = []
            seconds = _timed(device, lambda: out.append(served[c].caption_photos(photos, prompts)))
            outcomes = out[0].outcomes
            failed = [o for o in outcomes if o is None or o.status != "ok"]
            if failed:
                raise RuntimeError(f"{len(failed)} of {n} photos got no caption from vLLM: "
                                   f"{failed[0].error if failed[0] else out[0].unavailable}")
            return seconds, [o.text for o in outcomes], sum(o.completion_tokens for o in outcomes)

        local.caption(photos[:batch], prompts[:batch])                 # warm-ups
        for c in levels:
            served[c].caption_photos(photos[:c], prompts[:c])
        rounds: dict[str, list[Any]] = {"in_process": [], **{f"endpoint_c{c}": [] for c in levels}}
        for r in range(2):
            order = list(rounds) if r == 0 else list(rounds)[::-1]
            for key in order:
                rounds[key].append(in_process() if key == "in_process" else endpoint(int(key.split("_c")[1])))
        in_s = statistics.median(x[0] for x in rounds["in_process"])
        result: dict[str, Any] = {"photos": n, "batch": batch, "max_new_tokens": new_tokens, "dtype": served_dtype,
                                  "vllm_startup_s": round(startup, 1), "in_process_per_s": n / in_s, "endpoint": {}}
        reference = rounds["in_process"][0][1]
        for c in levels:
            runs = rounds[f"endpoint_c{c}"]
            secs = statistics.median(x[0] for x in runs)
            result["endpoint"][c] = {"per_s": n / secs, "speedup": in_s / secs,
                                     "completion_tokens": runs[0][2],
                                     "same_captions_as_in_process": sum(a == b for a, b in zip(runs[0][1], reference))}
        best = max(levels, key=lambda c: result["endpoint"][c]["per_s"])
        result.update(one_at_a_time_per_s=result["in_process_per_s"], batched_per_s=result["endpoint"][best]["per_s"],
                      speedup=result["endpoint"][best]["speedup"], best_concurrency=best)
        return result
    finally:
        _stop_group(proc)


# --- the report -------------------------------------------------------------------------------------------

def markdown(report: dict[str, Any]) -> str:
    env = report["sections"].get("environment", {})
    lines = [f"# capsearch GPU check ({'quick' if report['quick'] else 'full'}, device {report['device']})", "",
             f"{env.get('machine', machine())}; torch {env.get('torch', '?')}, CUDA {env.get('cuda', '-')}; "
             f"{report['seconds']:.0f} s in all", "",
             "| section | what | one at a time /s | batched /s | speed-up | status |",
             "|---|---|---:|---:|---:|---|"]

    def row(section: str, what: str, r: dict[str, Any], status: str) -> None:
        if "speedup" in r:
            target = "" if not report["device"].startswith("cuda") else \
                (" (target met)" if r["speedup"] >= TARGET_SPEEDUP else f" (target {TARGET_SPEEDUP:.0f}x not met)")
            lines.append(f"| {section} | {what}, batch {r['batch']} | {r['one_at_a_time_per_s']:.2f} | "
                         f"{r['batched_per_s']:.2f} | {r['speedup']:.2f}x{target} | {status} |")
        else:
            lines.append(f"| {section} | {what} | | | | {status} |")

    for name, s in report["sections"].items():
        status = s["status"] + (f": {s.get('reason') or s.get('error')}" if s["status"] != "ok" else "")
        status = status.replace("|", "/").replace("\n", " ")[:200]
        if name == "image_embedding" and s["status"] == "ok":
            row(name, s["model"], s, status)
        elif name == "captioners" and "models" in s:
            for label, m in s["models"].items():
                row(name, f"{label}, {m.get('parameters_m', '?')}M params", m,
                    m["status"] + (f": {m.get('error')}" if m["status"] != "ok" else ""))
        elif name == "oom_halving" and s["status"] == "ok":
            row(name, f"configured {s['configured']}, tried {s['tried']}, kept {s['final_limit']}", s, status)
        elif name == "vllm_endpoint" and s["status"] == "ok":
            lines.append(f"| {name} | in-process batched generate, batch {s['batch']} (left) vs `vllm serve` through the "
                         f"endpoint captioner, concurrency {s['best_concurrency']} (right); {s['photos']} photos | "
                         f"{s['in_process_per_s']:.2f} | {s['batched_per_s']:.2f} | {s['speedup']:.2f}x | {status} |")
        elif name == "dask_runner" and s["status"] == "ok":
            row(name, f"{s['workers']} worker(s) for GPUs {s['gpus'] or 'none'}; flow with --runner dask "
                      f"embedded {s['photos_embedded']} photos in {s['flow_seconds']} s", s, status)
        else:
            row(name, "", s, status)
    return "\n".join(lines) + "\n"


def _stop(signum: int, _frame: Any) -> None:
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so the Dask cluster stops and the temporary models are deleted."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when torch sees one)")
    p.add_argument("--dtype", default="auto", help="auto (bf16, fp16 where bf16 is missing; float32 on CPU), "
                                                   "bfloat16, float16, float32")
    p.add_argument("--quick", action="store_true", help="small models and counts (checks the script, not the GPU)")
    p.add_argument("--out", type=Path, default=None, help="where to write gpu_check.json and gpu_check.md")
    p.add_argument("--budget", type=float, default=450.0, help="seconds after which no new section starts")
    p.add_argument("--sections", default="environment,image_embedding,captioners,oom_halving,dask_runner,vllm_endpoint")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    cuda = torch.cuda.is_available()
    device = args.device
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if device.startswith("cuda") and not cuda:
        print(f"--device {device} asked for, but torch {torch.__version__} sees no CUDA GPU "
              f"(torch.version.cuda = {torch.version.cuda}, CUDA_VISIBLE_DEVICES = "
              f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): run with --device cpu --quick to check the "
              "script, or on a machine with a GPU and its driver", file=sys.stderr)
        return 2
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    out = args.out or Path(os.environ.get("OUT") or "outputs/gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    print(f"# GPU check: device {device}, {'quick' if args.quick else 'full sizes'}, budget {args.budget:.0f} s, "
          f"results to {out}")
    check = Check(args.budget)
    with tempfile.TemporaryDirectory(prefix="capsearch-gpu-check-") as tmp:
        work = Path(tmp)
        runs: dict[str, tuple[Callable[[], dict[str, Any]], bool]] = {
            "environment": (lambda: environment(device), False),
            "image_embedding": (lambda: image_embedding(device, args.dtype, args.quick, work / "embed"), False),
            "captioners": (lambda: captioners(device, args.dtype, args.quick, work / "captioners"), False),
            "oom_halving": (lambda: oom_halving(device), True),
            "dask_runner": (lambda: dask_runner(device, args.quick, work / "dask",
                                                work / "embed" / "vit-b-32-random.safetensors"), False),
            "vllm_endpoint": (lambda: vllm_endpoint(device, args.dtype, args.quick, work / "vllm"), False),
        }
        unknown = sorted(set(wanted) - set(runs))
        if unknown:
            print(f"unknown section(s): {', '.join(unknown)}; known: {', '.join(runs)}", file=sys.stderr)
            return 2
        for sub in ("embed", "captioners", "dask", "vllm"):
            (work / sub).mkdir()
        for name in wanted:
            fn, needs_cuda = runs[name]
            check.section(name, fn, needs_cuda=needs_cuda, cuda=device.startswith("cuda"))
    report = {"device": device, "quick": args.quick, "dtype": args.dtype, "seconds": time.monotonic() - check.started,
              "target_speedup": TARGET_SPEEDUP, "sections": check.sections}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 1 if any(s["status"] == "failed" for s in check.sections.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
