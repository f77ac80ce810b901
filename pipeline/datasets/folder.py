"""Any folder of the user's own photos, optionally with captions for some of them.

Photos are found recursively (JPEG, PNG, WebP and whatever Pillow opens; hidden
folders skipped). A caption file (CSV, JSONL or Flickr8k-style token file) may
name photos by their path relative to the folder or, when unambiguous, by file
name alone. Captioned photos form the reference DB; the rest are the targets.
"""
from __future__ import annotations

import unicodedata
from collections import defaultdict
from pathlib import Path

from pipeline.datasets.base import Collection, CollectionItem
from pipeline.datasets.caption_files import read_caption_file
from pipeline.errors import DataError
from pipeline.images import walk_images


def load_folder(root: str | Path, captions_file: str | Path | None = None) -> Collection:
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"photo folder {root} does not exist or is not a folder")
    files = walk_images(root)
    if not files:
        raise DataError(f"no photos found under {root} (looked for JPEG, PNG, WebP and other image files)")
    by_rel: dict[str, Path] = {unicodedata.normalize("NFC", f.relative_to(root).as_posix()): f for f in files}
    by_base: dict[str, list[str]] = defaultdict(list)
    for rel in by_rel:
        by_base[rel.rsplit("/", 1)[-1]].append(rel)

    captions: dict[str, list[str]] = {}
    problems: list[tuple[str, str, str]] = []
    if captions_file:
        cpath = Path(captions_file).expanduser()
        if not cpath.is_absolute() and not cpath.exists():
            cpath = root / cpath
        if not cpath.exists():
            raise DataError(f"caption file {cpath} does not exist")
        raw, problems = read_caption_file(cpath)
        for ref, texts in raw.items():
            ref = ref.lstrip("./")
            if ref in by_rel:
                rel = ref
            elif len(by_base.get(ref, [])) == 1:
                rel = by_base[ref][0]
            elif len(by_base.get(ref, [])) > 1:
                problems.append((ref, "skipped", f"{cpath.name} names '{ref}' but several photos have that file name; use the relative path"))
                continue
            else:
                problems.append((ref, "skipped", f"{cpath.name} has captions for '{ref}' but there is no such photo under {root}"))
                continue
            merged = captions.setdefault(rel, [])
            merged.extend(t for t in texts if t not in merged)

    items = [CollectionItem(id=rel, path=path, captions=captions.get(rel, [])) for rel, path in by_rel.items()]
    uncaptioned = sum(1 for i in items if not i.captions)
    return Collection(name="folder", root=root, items=items, problems=problems, benchmark=uncaptioned == 0)
