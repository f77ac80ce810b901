"""Any folder of the user's own photos, optionally with captions for some of them.

Photos are found recursively (JPEG, PNG, WebP and whatever Pillow opens; hidden
folders skipped). A caption file (CSV, JSONL or Flickr8k-style token file) may
name photos by their path relative to the folder or, when unambiguous, by file
name alone. Captioned photos form the reference DB; the rest are the targets.

The folder may be a URL prefix (``s3://bucket/photos``, ``gs://...``, ``http(s)://...``: fsspec,
``pipeline.locations``); it is listed once, each photo with its size and last-modified time (or ETag),
so a rescan reads no photo that did not change, and the caption file may be a URL too.
"""
from __future__ import annotations

import shutil
import tempfile
import unicodedata
from collections import defaultdict
from pathlib import Path

from pipeline.datasets.base import Collection, CollectionItem
from pipeline.datasets.caption_files import read_caption_file
from pipeline.errors import DataError, one_line
from pipeline.images import image_extensions, walk_images
from pipeline.locations import RemoteFile, is_url, join, list_files, read_bytes


def load_folder(root: str | Path, captions_file: str | Path | None = None) -> Collection:
    if isinstance(root, str) and is_url(root):
        return _load_remote(root, str(captions_file) if captions_file else None)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"photo folder {root} does not exist or is not a folder")
    files = walk_images(root)
    if not files:
        raise DataError(f"no photos found under {root} (looked for JPEG, PNG, WebP and other image files)")
    by_rel: dict[str, Path] = {unicodedata.normalize("NFC", f.relative_to(root).as_posix()): f for f in files}
    cpath: Path | None = None
    if captions_file and not (isinstance(captions_file, str) and is_url(captions_file)):
        cpath = Path(captions_file).expanduser()
        if not cpath.is_absolute() and not cpath.exists():
            cpath = root / cpath
        if not cpath.exists():
            raise DataError(f"caption file {cpath} does not exist")
    elif captions_file:
        cpath = _fetch_caption_file(str(captions_file))
    captions, problems = _match_captions(cpath, by_rel, str(root))
    items = [CollectionItem(id=rel, path=path, captions=captions.get(rel, [])) for rel, path in by_rel.items()]
    uncaptioned = sum(1 for i in items if not i.captions)
    return Collection(name="folder", root=root, items=items, problems=problems, benchmark=uncaptioned == 0)


def _load_remote(root: str, captions_file: str | None) -> Collection:
    """A collection under a URL prefix: listed once (size, last-modified, ETag per photo), nothing read."""
    root = root.rstrip("/")
    exts = image_extensions()
    try:
        listed = list_files(root)
    except Exception as exc:  # noqa: BLE001 - unreachable, denied, no such bucket: one line, the run stops
        raise DataError(f"cannot list the photos under {root}: {one_line(exc)}") from None
    files: dict[str, RemoteFile] = {}
    for f in listed:
        if "." + f.rel.rsplit(".", 1)[-1].lower() in exts:
            files[unicodedata.normalize("NFC", f.rel)] = f
    if not files:
        raise DataError(f"no photos found under {root} (looked for JPEG, PNG, WebP and other image files)")
    cpath = None
    if captions_file:
        cpath = _fetch_caption_file(captions_file if is_url(captions_file) or Path(captions_file).is_absolute()
                                    else join(root, captions_file))
    captions, problems = _match_captions(cpath, files, root)
    items = [CollectionItem(id=rel, path=f.url, captions=captions.get(rel, []), stat=(f.size, f.mtime))
             for rel, f in files.items()]
    uncaptioned = sum(1 for i in items if not i.captions)
    return Collection(name="folder", root=root, items=items, problems=problems, benchmark=uncaptioned == 0)


def _fetch_caption_file(location: str) -> Path:
    """A caption file at a URL (or a local path), as a local copy read like any caption file."""
    if not is_url(location):
        path = Path(location).expanduser()
        if not path.exists():
            raise DataError(f"caption file {path} does not exist")
        return path
    try:
        data = read_bytes(location)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read the caption file {location}: {one_line(exc)}") from None
    folder = Path(tempfile.mkdtemp(prefix="capsearch-captions-"))
    path = folder / location.rstrip("/").rsplit("/", 1)[-1]
    path.write_bytes(data)
    return path


def _match_captions(cpath: Path | None, by_rel: dict, root: str) -> tuple[dict[str, list[str]], list[tuple[str, str, str]]]:
    """Each photo's captions from the caption file (by relative path, or by file name when unambiguous)."""
    by_base: dict[str, list[str]] = defaultdict(list)
    for rel in by_rel:
        by_base[rel.rsplit("/", 1)[-1]].append(rel)
    captions: dict[str, list[str]] = {}
    problems: list[tuple[str, str, str]] = []
    if cpath is None:
        return captions, problems
    try:
        raw, problems = read_caption_file(cpath)
    finally:
        if cpath.parent.name.startswith("capsearch-captions-"):
            shutil.rmtree(cpath.parent, ignore_errors=True)
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
    return captions, problems
