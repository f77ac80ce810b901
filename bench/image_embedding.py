"""Image embedding throughput: capsearch's ``embed-images`` stage vs plain open_clip loops.

A randomly initialised open_clip ViT-B-32 (``pretrained=None``) is saved to a weights file,
which capsearch loads as a user's local weights. Over the same demo-world photos:

- capsearch: the ``embed-images`` stage (decoding threads, batches, vectors written to the
  workspace store, ``.npy`` snapshot), with the model already loaded;
- with ``--process-decoders``, the same stage decoding in torch DataLoader worker processes
  started with ``forkserver`` (torch, open_clip and the loader preloaded in the fork server) or
  ``spawn``: the ways out of forking a threaded process that were not chosen;
- plain batched: open, preprocess, stack and ``encode_image`` in batches, in one process;
- one at a time: the same, one photo per forward pass (how the original scripts ran).

Paths alternate within each round (their order reversed every other round); the median and the
range over the rounds are printed, and each path's ratio to the plain batched loop of the same round.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

from bench import machine, stopwatch
from pipeline.embedders.loader import DecodedBatch, ImageFileDataset, collate_decoded
from pipeline.embedders.open_clip_embedder import OpenClipEmbedder

MODEL = "ViT-B-32"
PLAIN = "plain batched loop"
OURS = "capsearch embed-images"


class ProcessDecodingEmbedder(OpenClipEmbedder):
    """The open_clip embedder decoding in DataLoader worker processes started with ``context``."""

    context = "forkserver"

    def decoded_batches(self, paths: Sequence[str], batch_size: int, num_workers: int) -> Iterator[DecodedBatch]:
        import multiprocessing

        from torch.utils.data import DataLoader

        ctx = multiprocessing.get_context(self.context)
        if self.context == "forkserver":
            ctx.set_forkserver_preload(["torch", "torchvision", "open_clip", "pipeline.embedders.loader"])
        dataset = ImageFileDataset(paths, self.path_transform())
        yield from DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,  # type: ignore[arg-type]
                              collate_fn=collate_decoded, multiprocessing_context=ctx)


class SpawnDecodingEmbedder(ProcessDecodingEmbedder):
    context = "spawn"


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


def capsearch_stage(world: Path, workspace: Path, weights: Path, batch_size: int, workers: int, device: str,
                    embedder: type[OpenClipEmbedder] | None = None) -> float:
    """Seconds for the embed-images stage over every photo of the world (model loaded beforehand).

    ``embedder``: a subclass of the configured embedder to run the stage with (another decoder).
    """
    from pipeline.config_file import update_config_file
    from pipeline.stages.run import run_stage
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
    if embedder is not None:
        stage.embedder = embedder(MODEL, str(weights), device=device, batch_size=batch_size, num_workers=workers)
    stage.embedder.load()
    with stopwatch() as t:
        report = run_stage(stage)
    assert report.done == n, report
    return t[0]


def summary(values: list[float], digits: int = 2) -> str:
    """Median and range."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="decoding threads (or DataLoader worker processes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians and ranges are printed")
    p.add_argument("--single-photos", type=int, default=32, help="photos for the one-at-a-time loop")
    p.add_argument("--process-decoders", action="store_true",
                   help="also run the stage with DataLoader worker processes (forkserver, spawn)")
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
              f"batch {args.batch_size}, {args.workers} decoding workers, device {device}, {args.rounds} rounds")
        few = paths[:args.single_photos]

        def stage(label: str, embedder: type[OpenClipEmbedder] | None) -> tuple[str, int, Callable[[int], float]]:
            slug = label.rsplit(" ", 1)[-1].strip("()")
            return label, len(paths), lambda r: capsearch_stage(world, root / f"ws-{slug}-{r}", weights,
                                                                args.batch_size, args.workers, device, embedder)

        runs: list[tuple[str, int, Callable[[int], float]]] = [
            ("one photo at a time", len(few), lambda r: plain_loop(few, weights, 1, device)),
            (PLAIN, len(paths), lambda r: plain_loop(paths, weights, args.batch_size, device)),
            stage(f"{OURS} (threads)", None),
        ]
        if args.process_decoders:
            runs += [stage(f"{OURS} (DataLoader forkserver)", ProcessDecodingEmbedder),
                     stage(f"{OURS} (DataLoader spawn)", SpawnDecodingEmbedder)]
        rates: dict[str, list[float]] = {label: [] for label, _, _ in runs}
        for r in range(args.rounds):
            for label, n, run in (runs if r % 2 == 0 else runs[::-1]):
                rates[label].append(n / run(r))
    ratios = {label: [a / b for a, b in zip(values, rates[PLAIN])] for label, values in rates.items()}
    print(f"{'path':<44} {'photos/s, median (range)':>26} {'vs plain batched, median (range)':>34}")
    for label, values in rates.items():
        print(f"{label:<44} {summary(values):>26} {summary(ratios[label]) + 'x':>34}")
    print(f"capsearch (threads) vs plain batched loop: {statistics.median(ratios[f'{OURS} (threads)']):.2f}x "
          "(target >= 0.95x)")
    print(f"capsearch (threads) vs one at a time:      "
          f"{statistics.median(rates[f'{OURS} (threads)']) / statistics.median(rates['one photo at a time']):.2f}x")


if __name__ == "__main__":
    main()
