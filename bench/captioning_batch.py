"""Batched captioning vs one photo at a time, with a SmolVLM-256M-sized chat VLM.

The model is an Idefics3 model built from SmolVLM-256M-Instruct's configuration values
(SigLIP-B/16 at 512 px, a 30-layer SmolLM2-135M decoder, pixel-shuffle factor 4), randomly
initialised and saved to a folder that capsearch loads as a user's local model. Its tokenizer
is a byte-level BPE trained on the demo world's captions, padded to the model's vocabulary so
every generated id decodes. Random weights never stop early: every caption is
``max_new_tokens`` long, in both paths.

Prompts are real ``vlm-neighbours`` prompts: the demo world goes through ingest, embed-images,
neighbours and prompts first. Then the same targets are captioned

- one at a time by a plain transformers loop (processor, ``generate``, decode), and
- by capsearch's ``caption:vlm-neighbours`` stage with captioner batch sizes 1, 4 and 16.

By default each photo is one 512 px tile (64 image tokens); ``--split-images`` uses SmolVLM's
own tiling (up to 2048 px in 512 px tiles plus a global view), which is far slower on a CPU.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import machine, stopwatch

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


def build_model(out: Path, corpus: list[str], split_images: bool) -> Path:
    """A SmolVLM-256M-sized Idefics3 model and processor, saved with ``save_pretrained``."""
    import torch
    from transformers import (AutoModelForImageTextToText, Idefics3Config, Idefics3ImageProcessor, Idefics3Processor,
                              PreTrainedTokenizerFast)

    from tests.fixtures.tiny_transformers import SMOLVLM_CHAT_TEMPLATE

    torch.manual_seed(0)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(corpus), bos_token="<|im_start|>",
                                        eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                                        unk_token="<|endoftext|>", padding_side="left")
    side = VISION_CONFIG["image_size"]
    image_processor = Idefics3ImageProcessor(do_image_splitting=split_images,
                                             size={"longest_edge": MAX_IMAGE_SIDE if split_images else side},
                                             max_image_size={"longest_edge": side})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN,
                                  chat_template=SMOLVLM_CHAT_TEMPLATE)
    tokenizer = processor.tokenizer
    tokenizer.add_tokens([f"fill{i}" for i in range(TEXT_CONFIG["vocab_size"] - len(tokenizer))])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>")}
    config = Idefics3Config(
        image_token_id=ids["<image>"], scale_factor=SCALE_FACTOR, vision_config=VISION_CONFIG,
        text_config={**TEXT_CONFIG, "pad_token_id": ids["<|endoftext|>"], "bos_token_id": ids["<|im_start|>"],
                     "eos_token_id": ids["<end_of_utterance>"]},
        pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=False)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|im_start|>"]
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def prepare_workspace(root: Path, n_targets: int, max_new_tokens: int, split_images: bool, device: str):
    """A demo-world workspace whose targets have neighbour prompts, captioned by the bench model."""
    from pipeline.config_file import update_config_file
    from pipeline.datasets.demo import TOKEN_FILE, generate_demo_world
    from pipeline.stages.base import run_stage
    from pipeline.stages.registry import pipeline_stages
    from pipeline.workspace import Workspace

    world = root / "world"
    n_images = max(40, 4 * n_targets)
    generate_demo_world(world, n_images=n_images, seed=7)
    corpus = [line.split("\t", 1)[-1] for line in (world / TOKEN_FILE).read_text(encoding="utf-8").splitlines()]
    model_dir = build_model(root / "model", corpus, split_images)
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


def plain_one_at_a_time(captioner, images, prompts) -> float:
    """Seconds for a plain transformers loop: one photo per ``generate`` call, same model and settings."""
    import torch

    processor, model = captioner.processor, captioner.model
    device = next(model.parameters()).device

    def one(image, prompt) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(text=[text], images=[[image]], return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=captioner.generation.max_new_tokens, do_sample=False,
                                 num_beams=1)
        return processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    with stopwatch() as t:
        for image, prompt in zip(images, prompts):
            one(image, prompt)
    return t[0]


def capsearch_batched(ws, ids: list[str], batch_size: int) -> float:
    """Seconds for the caption stage to caption ``ids`` with the captioner's batch size set to ``batch_size``."""
    from pipeline.config_file import update_config_file
    from pipeline.stages.base import Batch
    from pipeline.stages.vision import CaptionStage

    update_config_file(ws.config_path, {"captioners": {CAPTIONER: {**ws.config.captioner(CAPTIONER).model_dump(),
                                                                     "batch_size": batch_size}}})
    ws.reload_config()
    ws.store.delete_captions(CAPTIONER)
    stage = CaptionStage(ws, CAPTIONER)
    with stopwatch() as t:
        result = stage.run_batch(Batch(0, tuple(ids), ""))
    assert result.done == len(ids), result
    return t[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="1,4,16")
    p.add_argument("--photos", type=int, default=4, help="photos per run (runs with a larger batch size use that many)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="a one-sentence caption")
    p.add_argument("--split-images", action="store_true", help="SmolVLM's own 512 px tiling up to 2048 px")
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=1, help="repeat the measurements, keep the best of each")
    args = p.parse_args(argv)
    from pipeline.images import open_rgb
    from pipeline.models.device import resolve_device
    from pipeline.stages.vision import MAX_CAPTION_SIDE, CaptionStage, PromptsStage, collection_root

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    n_targets = max([args.photos, *sizes])
    device = resolve_device(args.device)
    print(f"# {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        ws = prepare_workspace(Path(tmp), n_targets, args.max_new_tokens, args.split_images, device)
        ids = ws.store.image_ids("target")
        prompts = ws.store.prompts(PromptsStage(ws).config_hash())
        root = collection_root(ws.store)
        images = {i: open_rgb(root / ws.store.image(i).path, max_side=MAX_CAPTION_SIDE) for i in ids}
        captioner = CaptionStage(ws, CAPTIONER).captioner
        params = sum(x.numel() for x in captioner.model.parameters()) / 1e6
        tokens = [captioner.count_prompt_tokens(prompts[i].text) for i in ids]
        print(f"# SmolVLM-256M-sized Idefics3 ({params:.0f}M parameters, random weights), device {device}, "
              f"{'tiled' if args.split_images else 'one 512 px tile per photo'}, prompts {min(tokens)}-{max(tokens)} "
              f"text tokens, {args.max_new_tokens} new tokens per caption")
        base_ids = ids[:args.photos]
        capsearch_batched(ws, ids[:1], 1)  # warm-up of both paths (the first generate call is slow)
        plain_one_at_a_time(captioner, [images[ids[0]]], [prompts[ids[0]].text])
        best: dict[int, float] = {}
        for _ in range(args.rounds):  # alternating rounds; the best of each is kept (shared machines are noisy)
            single = plain_one_at_a_time(captioner, [images[i] for i in base_ids], [prompts[i].text for i in base_ids])
            best[0] = min(best.get(0, single), single)
            for size in sizes:
                seconds = capsearch_batched(ws, ids[:max(args.photos, size)], size)
                best[size] = min(best.get(size, seconds), seconds)
        base_rate = len(base_ids) / best[0]
        print(f"{'plain loop, one at a time':<28} {base_rate:6.3f} photos/s ({len(base_ids)} photos, {best[0]:.1f} s)")
        for size in sizes:
            n = max(args.photos, size)
            rate = n / best[size]
            print(f"{f'capsearch batch size {size}':<28} {rate:6.3f} photos/s ({n} photos, {best[size]:.1f} s)"
                  f"  {rate / base_rate:.2f}x")


if __name__ == "__main__":
    main()
