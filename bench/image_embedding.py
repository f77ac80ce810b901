"""Image embedding throughput: capsearch's ``embed-images`` stage vs plain open_clip loops.

A randomly initialised open_clip ViT-B-32 (``pretrained=None``) is saved to a weights file,
which capsearch loads as a user's local weights. Over the same demo-world photos:

- capsearch: the ``embed-images`` stage (DataLoader decoding, batches, vectors written to the
  workspace store, ``.npy`` snapshot), with the model already loaded;
- plain batched: open, preprocess, stack and ``encode_image`` in batches, in one process;
- one at a time: the same, one photo per forward pass (how the original scripts ran).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import machine, stopwatch

MODEL = "ViT-B-32"


def build_weights(folder: Path) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(MODEL, pretrained=None)
    path = folder / "vit-b-32-random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def plain_loop(paths: list[Path], weights: Path, batch_size: int, device: str) -> float:
    """Seconds for a plain open_clip loop over the photos (batch_size 1: one photo at a time)."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=str(weights), device=device)
    model.eval()

    def run(chunk_paths: list[Path]) -> None:
        for start in range(0, len(chunk_paths), batch_size):
            batch = [preprocess(Image.open(p).convert("RGB")) for p in chunk_paths[start:start + batch_size]]
            with torch.inference_mode():
                feats = model.encode_image(torch.stack(batch).to(device))
                torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()

    run(paths[:2])  # warm-up
    with stopwatch() as t:
        run(paths)
    return t[0]


def capsearch_stage(world: Path, workspace: Path, weights: Path, batch_size: int, workers: int, device: str) -> float:
    """Seconds for the embed-images stage over every photo of the world (model loaded beforehand)."""
    from pipeline.config_file import update_config_file
    from pipeline.stages.base import run_stage
    from pipeline.stages.ingest import IngestStage
    from pipeline.stages.vision import EmbedImagesStage
    from pipeline.workspace import Workspace

    n = len(list((world / "Flicker8k_Dataset").glob("*.jpg")))
    update_config_file(workspace / "capsearch.toml", {
        "data": {"source": "demo", "path": str(world), "demo_images": n, "demo_seed": 7, "n_targets": n // 4},
        "image_embedder": {"name": "open_clip", "model": MODEL, "pretrained": str(weights),
                           "batch_size": batch_size, "num_workers": workers},
        "runtime": {"device": device},
    })
    ws = Workspace(workspace)
    run_stage(IngestStage(ws))
    stage = EmbedImagesStage(ws)
    stage.embedder.load()
    with stopwatch() as t:
        report = run_stage(stage)
    assert report.result.done == n, report
    return t[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the capsearch path")
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=3, help="repeat the measurements, keep the best of each")
    p.add_argument("--single-photos", type=int, default=32, help="photos for the one-at-a-time loop")
    args = p.parse_args(argv)
    from pipeline.datasets.demo import IMAGE_DIR, generate_demo_world
    from pipeline.models.device import resolve_device

    device = resolve_device(args.device)
    print(f"# {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = root / "world"
        generate_demo_world(world, n_images=args.photos, seed=7)
        paths = sorted((world / IMAGE_DIR).glob("*.jpg"))
        weights = build_weights(root)
        print(f"# {MODEL} (random weights), {len(paths)} demo photos 320x240 ({args.single_photos} one at a time), "
              f"batch {args.batch_size}, {args.workers} DataLoader workers, device {device}, best of {args.rounds} rounds")
        few = paths[:args.single_photos]
        rates: dict[str, float] = {}
        for r in range(args.rounds):  # alternating rounds; the best of each is kept (shared machines are noisy)
            for label, n, run in (
                ("one photo at a time", len(few), lambda: plain_loop(few, weights, 1, device)),
                ("plain batched loop", len(paths), lambda: plain_loop(paths, weights, args.batch_size, device)),
                ("capsearch embed-images", len(paths),
                 lambda: capsearch_stage(world, root / f"ws{r}", weights, args.batch_size, args.workers, device)),
            ):
                rates[label] = max(rates.get(label, 0.0), n / run())
    for label, rate in rates.items():
        print(f"{label:<24} {rate:8.2f} photos/s")
    ours = rates["capsearch embed-images"]
    print(f"capsearch vs plain batched loop: {ours / rates['plain batched loop']:.2f}x (target >= 0.95x)")
    print(f"capsearch vs one at a time:      {ours / rates['one photo at a time']:.2f}x")


if __name__ == "__main__":
    main()
