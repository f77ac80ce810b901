"""Flickr8k from a local folder in its usual layouts (also what the demo world writes).

Accepted layouts under ``root`` (the first match wins):
- images in ``Flicker8k_Dataset/`` (the original spelling), ``Flickr8k_Dataset/``, ``Images/`` or ``images/``;
- captions in ``Flickr8k.token.txt`` (at the root or in ``Flickr8k_text/``), or Kaggle's ``captions.txt`` (CSV);
- official splits in ``Flickr_8k.{train,dev,test}Images.txt`` when present.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

from pipeline.datasets.base import Collection, CollectionItem
from pipeline.datasets.caption_files import read_csv_captions, read_token_file
from pipeline.errors import DataError
from pipeline.images import walk_images

IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "images")
TEXT_DIRS = (".", "Flickr8k_text")
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}

MANUAL_DOWNLOAD_HELP = (
    "download Flickr8k_Dataset.zip and Flickr8k_text.zip (for example from "
    "https://github.com/jbrownlee/Datasets/releases/tag/Flickr8k) and unzip both into {root} so that it holds "
    "Flicker8k_Dataset/ and Flickr8k.token.txt; then set data.source = \"flickr8k\" and data.path to that folder"
)


def _find(root: Path, names: tuple[str, ...], dirs: tuple[str, ...] = (".",)) -> Path | None:
    for d in dirs:
        for name in names:
            p = (root / d / name)
            if p.exists():
                return p
    return None


def is_flickr8k_layout(root: Path) -> bool:
    return _find(root, IMAGE_DIRS) is not None and _find(root, (TOKEN_FILE, "captions.txt"), TEXT_DIRS) is not None


def load_flickr8k(root: str | Path, name: str = "flickr8k") -> Collection:
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise DataError(f"no data set folder at {root}; " + MANUAL_DOWNLOAD_HELP.format(root=root))
    image_dir = _find(root, IMAGE_DIRS)
    if image_dir is None:
        raise DataError(f"{root} has no image folder ({' or '.join(IMAGE_DIRS)}); " + MANUAL_DOWNLOAD_HELP.format(root=root))
    token = _find(root, (TOKEN_FILE,), TEXT_DIRS)
    if token is not None:
        raw_captions, problems = read_token_file(token)
    else:
        kaggle = _find(root, ("captions.txt",), TEXT_DIRS)
        if kaggle is None:
            raise DataError(f"{root} has no {TOKEN_FILE} (or Kaggle captions.txt); " + MANUAL_DOWNLOAD_HELP.format(root=root))
        raw_captions, problems = read_csv_captions(kaggle)
        token = kaggle

    official: dict[str, str] = {}
    for split, fname in SPLIT_FILES.items():
        p = _find(root, (fname,), TEXT_DIRS)
        if p is None:
            continue
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                official.setdefault(unicodedata.normalize("NFC", line.strip()), split)

    files = walk_images(image_dir)
    by_name: dict[str, Path] = {}
    for f in files:
        key = unicodedata.normalize("NFC", f.relative_to(image_dir).as_posix())
        by_name[key] = f

    items: list[CollectionItem] = []
    for key, path in by_name.items():
        caps = raw_captions.get(key)
        if not caps:
            problems.append((key, "skipped", f"no captions in {token.name}; a benchmark photo needs them"))
            continue
        items.append(CollectionItem(id=key, path=path, captions=caps, official_split=official.get(key)))
    for image in sorted(set(raw_captions) - set(by_name)):
        problems.append((image, "skipped", f"{token.name} has captions for {image} but there is no such file in {image_dir.name}/"))
    return Collection(name=name, root=image_dir, items=items, problems=problems, benchmark=True)
