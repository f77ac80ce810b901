"""Batched captioning vs one photo at a time, with a SmolVLM-256M-sized chat VLM, time broken down by phase.

The model is an Idefics3 model built from SmolVLM-256M-Instruct's configuration values
(SigLIP-B/16 at 512 px, a 30-layer SmolLM2-135M decoder, pixel-shuffle factor 4), randomly
initialised and saved to a folder that capsearch loads as a user's local model. Its tokenizer
is a byte-level BPE trained on the demo world's captions, padded to the model's vocabulary so
every generated id decodes. Random weights never stop early: every caption is
``max_new_tokens`` long, in both paths. ``--size small`` builds the same classes with fewer,
smaller layers (a quick check of the benchmark itself; its ratios say little about SmolVLM).

Prompts are real ``vlm-neighbours`` prompts: the demo world goes through ingest, embed-images,
neighbours and prompts first. Then **the same photos** (``--photos``) are captioned by every path:

- a plain transformers loop, one photo per ``generate`` call: open the photo from disk, the
  processor, ``generate``, decode (what a user's script does);
- capsearch's ``caption:vlm-neighbours`` stage (``CaptionStage.run_batch``: photos decoded in threads,
  ``caption_robust``, captions written to the store) with captioner batch sizes from ``--batch-sizes``;
- capsearch at the largest batch size that still makes several batches, with the photos ordered by prompt
  length (so a batch's prompts are of similar length and left padding adds fewer positions): what
  grouping by length would buy.

Paths alternate over ``--rounds`` rounds (order reversed every other round); median and range over the
rounds, ratios to the plain loop taken round by round. Each path's time is broken down by hooks on the
shared model (the same model object serves both paths; the hooks only read clocks):

- **preprocess**: the processor (chat template, tokenising, image resize and normalisation) and moving
  the tensors to the device;
- **prefill**: the first forward pass of each ``generate`` (vision encoder, connector, and the decoder
  over the whole prompt): compute-bound;
- **decode**: the rest of ``generate`` (one forward pass per new token reusing the KV cache, plus
  generate's own bookkeeping): bound by reading the decoder's weights once per step, which a batch
  shares;
- **other**: the rest (opening photos, the stage's store reads and writes, cleaning captions).

It also reports the padding: the share of the prefill's positions that were left padding.

By default each photo is one 512 px tile (64 image tokens); ``--split-images`` uses SmolVLM's
own tiling (up to 2048 px in 512 px tiles plus a global view), which is far slower on a CPU.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench import Spread, alternating, load_average, machine, ratios, stopwatch

CAPTIONER = "vlm-neighbours"
# SmolVLM-256M-Instruct (HuggingFaceTB/SmolVLM-256M-Instruct, config.json and preprocessor_config.json)
TEXT_CONFIG = dict(model_type="llama", vocab_size=49280, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                   num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                   rope_theta=100000.0, tie_word_embeddings=False)
VISION_CONFIG = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     image_size=512, patch_size=16, layer_norm_eps=1e-6)
SCALE_FACTOR = 4
IMAGE_SEQ_LEN = 64            # (512 / 16)^2 / 4^2
MAX_IMAGE_SIDE = 2048         # with tiling
# --size small: same classes, fewer and smaller layers (checks the benchmark, not SmolVLM)
SMALL_TEXT = dict(TEXT_CONFIG, hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
                  num_key_value_heads=2)
SMALL_VISION = dict(VISION_CONFIG, hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=6,
                    image_size=256)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>",
                  "<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


def train_tokenizer(corpus: list[str], vocab_size: int = 8000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_model(out: Path, corpus: list[str], split_images: bool, small: bool = False) -> Path:
    """A SmolVLM-256M-sized Idefics3 model and processor (``small``: fewer, smaller layers), saved with
    ``save_pretrained``."""
    import torch
    from transformers import (AutoModelForImageTextToText, Idefics3Config, Idefics3ImageProcessor, Idefics3Processor,
                              PreTrainedTokenizerFast)

    from tests.fixtures.tiny_transformers import SMOLVLM_CHAT_TEMPLATE

    torch.manual_seed(0)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(corpus), bos_token="<|im_start|>",
                                        eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                                        unk_token="<|endoftext|>", padding_side="left")
    text_config, vision_config = (SMALL_TEXT, SMALL_VISION) if small else (TEXT_CONFIG, VISION_CONFIG)
    side = vision_config["image_size"]
    image_processor = Idefics3ImageProcessor(do_image_splitting=split_images,
                                             size={"longest_edge": MAX_IMAGE_SIDE if split_images else side},
                                             max_image_size={"longest_edge": side})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=(side // vision_config["patch_size"]) ** 2 // SCALE_FACTOR ** 2,
                                  chat_template=SMOLVLM_CHAT_TEMPLATE)
    tokenizer = processor.tokenizer
    tokenizer.add_tokens([f"fill{i}" for i in range(text_config["vocab_size"] - len(tokenizer))])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>")}
    config = Idefics3Config(
        image_token_id=ids["<image>"], scale_factor=SCALE_FACTOR, vision_config=vision_config,
        text_config={**text_config, "pad_token_id": ids["<|endoftext|>"], "bos_token_id": ids["<|im_start|>"],
                     "eos_token_id": ids["<end_of_utterance>"]},
        pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=False)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|im_start|>"]
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def prepare_workspace(root: Path, n_targets: int, max_new_tokens: int, split_images: bool, device: str,
                      small: bool = False):
    """A demo-world workspace whose targets have neighbour prompts, captioned by the bench model."""
    from pipeline.config_file import update_config_file
    from pipeline.datasets.demo import TOKEN_FILE, generate_demo_world
    from pipeline.stages.run import run_stage
    from pipeline.stages.registry import pipeline_stages
    from pipeline.workspace import Workspace

    world = root / "world"
    n_images = max(40, 4 * n_targets)
    generate_demo_world(world, n_images=n_images, seed=7)
    corpus = [line.split("\t", 1)[-1] for line in (world / TOKEN_FILE).read_text(encoding="utf-8").splitlines()]
    model_dir = build_model(root / "model", corpus, split_images, small)
    update_config_file(root / "ws" / "capsearch.toml", {
        "data": {"source": "demo", "path": str(world), "demo_images": n_images, "demo_seed": 7, "n_targets": n_targets},
        "image_embedder": {"name": "classical", "num_workers": 0},
        "runtime": {"device": device},
        "captioners": {"enabled": [CAPTIONER], CAPTIONER: {"kind": CAPTIONER, "model": str(model_dir), "batch_size": 1,
                                                           "max_new_tokens": max_new_tokens}},
    })
    ws = Workspace(root / "ws")
    for stage in pipeline_stages(ws, ["ingest", "embed-images", "neighbours", "prompts"]):
        run_stage(stage)
    return ws


class PhaseClock:
    """Seconds per phase, read by hooks on the model and around the processor (see the module doc)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.positions = 0          # prefill positions, padding included
        self.padding = 0
        self._prefill_started: float | None = None

    def reset(self) -> "PhaseClock":
        self.seconds.clear()
        self.positions = self.padding = 0
        return self

    def attach(self, captioner) -> None:
        """Hooks on the captioner's (shared) model and its class's ``prepare_inputs``; once per process."""
        from pipeline.captioners.vlm import VLMCaptioner

        model = captioner.model
        if getattr(model, "_bench_clock", None) is not None:
            model._bench_clock = self
            return
        model._bench_clock = self
        clock = self

        def pre(_module, args, kwargs):
            ids = kwargs.get("input_ids")
            length = (ids if ids is not None else kwargs.get("inputs_embeds")).shape[1]
            if length > 1:                                      # the first pass over the whole prompt
                mask = kwargs.get("attention_mask")
                model._bench_clock.positions += int(mask.numel()) if mask is not None else 0
                model._bench_clock.padding += int((mask == 0).sum()) if mask is not None else 0
                model._bench_clock._prefill_started = time.perf_counter()

        def post(_module, _args, _kwargs, _out):
            started = model._bench_clock._prefill_started
            if started is not None:
                model._bench_clock.seconds["prefill"] += time.perf_counter() - started
                model._bench_clock._prefill_started = None

        model.register_forward_pre_hook(pre, with_kwargs=True)
        model.register_forward_hook(post, with_kwargs=True)
        generate = model.generate

        def timed_generate(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return generate(*args, **kwargs)
            finally:
                model._bench_clock.seconds["generate"] += time.perf_counter() - t0

        model.generate = timed_generate
        prepare = VLMCaptioner.prepare_inputs
        if not getattr(prepare, "_bench_timed", False):
            def timed_prepare(self, images, prompts):
                t0 = time.perf_counter()
                try:
                    return prepare(self, images, prompts)
                finally:
                    getattr(self.model, "_bench_clock", clock).seconds["preprocess"] += time.perf_counter() - t0
            timed_prepare._bench_timed = True  # type: ignore[attr-defined]
            VLMCaptioner.prepare_inputs = timed_prepare   # the shipped method, with a clock around it

    def breakdown(self, total: float) -> dict[str, float]:
        pre, prefill, generate = (self.seconds.get(k, 0.0) for k in ("preprocess", "prefill", "generate"))
        return {"total": total, "preprocess": pre, "prefill": prefill, "decode": generate - prefill,
                "other": total - pre - generate, "padding": self.padding / self.positions if self.positions else 0.0}


def plain_one_at_a_time(captioner, paths: list[Path], prompts: list[str], clock: PhaseClock) -> dict[str, float]:
    """A plain transformers loop: open each photo, one ``generate`` call per photo, same model and settings."""
    import torch

    from pipeline.images import open_rgb
    from pipeline.compute.captions import MAX_CAPTION_SIDE

    processor, model = captioner.processor, captioner.model
    device = next(model.parameters()).device

    def one(path, prompt) -> str:
        image = open_rgb(path, max_side=MAX_CAPTION_SIDE)
        t0 = time.perf_counter()
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(text=[text], images=[[image]], return_tensors="pt").to(device)
        clock.seconds["preprocess"] += time.perf_counter() - t0
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=captioner.generation.max_new_tokens, do_sample=False,
                                 num_beams=1)
        return processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    clock.reset()
    with stopwatch() as t:
        for path, prompt in zip(paths, prompts):
            one(path, prompt)
    return clock.breakdown(t[0])


def capsearch_batched(ws, ids: list[str], batch_size: int, clock: PhaseClock) -> dict[str, float]:
    """The caption stage captioning ``ids`` (one stage batch) with the captioner's batch size set to ``batch_size``."""
    from pipeline.config_file import update_config_file
    from pipeline.stages.base import Batch
    from pipeline.stages.vision import CaptionStage

    update_config_file(ws.config_path, {"captioners": {CAPTIONER: {**ws.config.captioner(CAPTIONER).model_dump(),
                                                                     "batch_size": batch_size}}})
    ws.reload_config()
    ws.store.delete_captions(CAPTIONER)
    stage = CaptionStage(ws, CAPTIONER)
    clock.attach(stage.captioner)
    clock.reset()
    with stopwatch() as t:
        result = stage.run_batch(Batch(0, tuple(ids), ""))
    assert result.done == len(ids), result
    return clock.breakdown(t[0])


PHASES = ("preprocess", "prefill", "decode", "other")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="1,4,8")
    p.add_argument("--photos", type=int, default=8, help="photos every path captions (the same ones)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="a one-sentence caption")
    p.add_argument("--split-images", action="store_true", help="SmolVLM's own 512 px tiling up to 2048 px")
    p.add_argument("--size", choices=("smolvlm-256m", "small"), default="smolvlm-256m")
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (order reversed every other round)")
    p.add_argument("--no-sorted", action="store_true", help="skip the path with photos ordered by prompt length")
    args = p.parse_args(argv)
    import torch

    from pipeline.models.device import resolve_device
    from pipeline.stages.vision import CaptionStage, PromptsStage, collection_root

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    device = resolve_device(args.device)
    print(f"# {machine()}")
    print(f"# {load_average()} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        ws = prepare_workspace(Path(tmp), args.photos, args.max_new_tokens, args.split_images, device,
                               small=args.size == "small")
        ids = ws.store.image_ids("target")[:args.photos]
        prompts = ws.store.prompts(PromptsStage(ws).config_hash())
        root = collection_root(ws.store)
        paths = [Path(root) / ws.store.image(i).path for i in ids]
        captioner = CaptionStage(ws, CAPTIONER).captioner
        clock = PhaseClock()
        clock.attach(captioner)
        params = sum(x.numel() for x in captioner.model.parameters()) / 1e6
        tokens = {i: captioner.count_prompt_tokens(prompts[i].text) for i in ids}
        by_length = sorted(ids, key=lambda i: (tokens[i], i))
        print(f"# {'SmolVLM-256M-sized' if args.size != 'small' else 'small'} Idefics3 ({params:.0f}M parameters, "
              f"random weights), device {device}, torch threads {torch.get_num_threads()}, "
              f"{'tiled' if args.split_images else 'one tile per photo'}, prompts {min(tokens.values())}-"
              f"{max(tokens.values())} text tokens, {args.max_new_tokens} new tokens per caption, "
              f"the same {len(ids)} photos for every path, {args.rounds} alternating rounds")
        capsearch_batched(ws, ids[:1], 1, clock)  # warm-up of both paths (the first generate call is slow)
        plain_one_at_a_time(captioner, paths[:1], [prompts[ids[0]].text], clock)
        runs = {"plain loop": lambda: plain_one_at_a_time(captioner, paths, [prompts[i].text for i in ids], clock)}
        for size in sizes:
            runs[f"capsearch batch {size}"] = (lambda size=size: capsearch_batched(ws, ids, size, clock))
        split = [s for s in sizes if 1 < s < len(ids)]       # grouping by length matters with several batches
        if not args.no_sorted and split:
            runs[f"capsearch batch {max(split)}, by length"] = lambda: capsearch_batched(ws, by_length, max(split), clock)
        results = alternating(runs, args.rounds)
    n = len(ids)
    base = [n / r["total"] for r in results["plain loop"]]
    print("seconds per photo by phase: median over the rounds")
    print(f"{'path':<32} {'photos/s, median (range)':>26} {'vs plain loop':>20} | "
          + " ".join(f"{ph:>10}" for ph in PHASES) + f" | {'padding':>7}")
    for label, rs in results.items():
        rates = [n / r["total"] for r in rs]
        phases = {ph: Spread.of([r[ph] / n for r in rs]).median for ph in PHASES}
        padding = Spread.of([r["padding"] for r in rs]).median
        rel = ratios(rates, base)
        print(f"{label:<32} {Spread.of(rates).show('.3f'):>26} {rel.show('.2f') + 'x':>20} | "
              + " ".join(f"{phases[ph]:>10.3f}" for ph in PHASES) + f" | {padding:>6.1%}")
    print(f"# {load_average()} at the end")


if __name__ == "__main__":
    main()
