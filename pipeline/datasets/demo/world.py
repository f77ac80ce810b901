"""Writing the demo world to disk in the Flickr8k layout, and telling whether a folder already holds it."""
from __future__ import annotations

import io
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.datasets.demo.captions import CAPTIONS_PER_IMAGE, write_captions
from pipeline.datasets.demo.drawing import render_scene
from pipeline.datasets.demo.scenes import sample_scene
from pipeline.errors import ConfigError
from pipeline.progress import ProgressCallback, StageProgress

DEFAULT_DEMO_IMAGES = 800
GENERATOR_VERSION = 1

IMAGE_DIR = "Flicker8k_Dataset"
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt",
}
SCENES_FILE = "demo_scenes.jsonl"
MANIFEST_FILE = "demo_world.json"
SPLIT_FRACTIONS = {"train": 0.7, "dev": 0.1, "test": 0.2}
JPEG_QUALITY = 90


@dataclass
class DemoSummary:
    root: Path
    n_images: int
    n_captions: int
    seconds: float


def _split(ids: list[str], seed: int) -> dict[str, list[str]]:
    order = list(ids)
    random.Random(f"capsearch-demo-split:{seed}").shuffle(order)
    n = len(order)
    n_train = int(round(n * SPLIT_FRACTIONS["train"]))
    n_dev = int(round(n * SPLIT_FRACTIONS["dev"]))
    return {"train": sorted(order[:n_train]), "dev": sorted(order[n_train:n_train + n_dev]),
            "test": sorted(order[n_train + n_dev:])}


def _write_text(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")


def _manifest(n_images: int, seed: int, size: tuple[int, int]) -> dict:
    return {"generator": "capsearch demo world", "version": GENERATOR_VERSION, "n_images": n_images, "seed": seed,
            "size": list(size), "captions_per_image": CAPTIONS_PER_IMAGE, "jpeg_quality": JPEG_QUALITY}


def demo_world_matches(root: Path, n_images: int = DEFAULT_DEMO_IMAGES, seed: int = 7,
                       size: tuple[int, int] = (320, 240)) -> bool:
    """True when ``root`` holds a complete demo world made with these settings by this generator version."""
    try:
        found = json.loads((Path(root) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return found == _manifest(n_images, seed, size) and (Path(root) / TOKEN_FILE).exists()


def generate_demo_world(root: Path, n_images: int = DEFAULT_DEMO_IMAGES, seed: int = 7,
                        size: tuple[int, int] = (320, 240), progress: ProgressCallback | None = None) -> DemoSummary:
    """Write the demo world under ``root`` (Flickr8k layout plus ``demo_scenes.jsonl``) and return a summary.

    Same ``seed`` and ``n_images`` give byte-identical files. Images of an earlier, larger
    world in the same folder are removed. The token file is written last, so an
    interrupted run never looks like a complete Flickr8k folder.
    """
    if n_images < 1:
        raise ConfigError(f"data.demo_images: the demo world needs at least one image, not {n_images}")
    if size[0] < 64 or size[1] < 48:
        raise ConfigError(f"demo image size {size[0]}x{size[1]} is too small to draw scenes (at least 64x48)")
    started = time.monotonic()
    root = Path(root)
    image_dir = root / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in (root / MANIFEST_FILE, root / TOKEN_FILE):
        stale.unlink(missing_ok=True)
    stage = StageProgress(stage="demo-world", total=n_images, callback=progress)
    taken: set[str] = set()
    tokens: list[str] = []
    records: list[str] = []
    ids: list[str] = []
    for index in range(1, n_images + 1):
        scene = sample_scene(seed, index, size)
        buf = io.BytesIO()
        render_scene(scene, seed).save(buf, format="JPEG", quality=JPEG_QUALITY)
        (image_dir / f"{scene.image_id}.jpg").write_bytes(buf.getvalue())
        for i, text in enumerate(write_captions(scene, seed, taken)):
            tokens.append(f"{scene.image_id}.jpg#{i}\t{text}")
        records.append(json.dumps(scene.record(), sort_keys=True))
        ids.append(f"{scene.image_id}.jpg")
        stage.advance()
    wanted = set(ids)
    for old in image_dir.glob("demo_*.jpg"):
        if old.name not in wanted:
            old.unlink()
    _write_text(root / SCENES_FILE, records)
    for split, names in _split(ids, seed).items():
        _write_text(root / SPLIT_FILES[split], names)
    _write_text(root / TOKEN_FILE, tokens)
    (root / MANIFEST_FILE).write_text(json.dumps(_manifest(n_images, seed, size), sort_keys=True, indent=1) + "\n",
                                      encoding="utf-8")
    seconds = time.monotonic() - started
    stage.finish(f"demo world: {n_images} photos, {len(tokens)} captions in {seconds:.1f} s")
    return DemoSummary(root=root, n_images=n_images, n_captions=len(tokens), seconds=seconds)
