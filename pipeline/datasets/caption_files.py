"""Readers for caption files: Flickr8k token files, CSV and JSONL.

Each returns ``(captions, problems)`` where captions maps the image reference as
written in the file to its captions in file order, and problems lists
``(item, severity, reason)`` for every line that could not be used.
"""
from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path

Problems = list[tuple[str, str, str]]

_IMAGE_COLUMNS = ("image", "file", "filename", "file_name", "path", "image_id", "image_name")
_CAPTION_COLUMNS = ("caption", "text", "description", "comment")


def _norm(ref: str) -> str:
    return unicodedata.normalize("NFC", ref.strip().replace("\\", "/"))


def _clean_caption(text: str) -> str:
    return " ".join(text.split())


def read_token_file(path: Path) -> tuple[dict[str, list[str]], Problems]:
    """Flickr8k ``Flickr8k.token.txt``: ``<image>#<n>\\t<caption>`` per line."""
    captions: dict[str, dict[int, str]] = {}
    problems: Problems = []
    label = path.name
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\n\r")
            if not line.strip():
                continue
            where = f"{label}:{lineno}"
            if "\t" not in line:
                problems.append((where, "skipped", "malformed line: no tab between '<image>#<n>' and the caption"))
                continue
            ref, text = line.split("\t", 1)
            text = _clean_caption(text)
            if "#" in ref:
                image, _, num = ref.rpartition("#")
                if not num.strip().isdigit():
                    problems.append((where, "skipped", f"malformed line: caption number '{num}' is not a number"))
                    continue
                idx = int(num)
            else:
                image, idx = ref, None
            image = _norm(image)
            if not image:
                problems.append((where, "skipped", "malformed line: no image name"))
                continue
            if not text:
                problems.append((where, "skipped", f"empty caption for {image}"))
                continue
            slot = captions.setdefault(image, {})
            if idx is None:
                idx = max(slot, default=-1) + 1
            if idx in slot:
                problems.append((where, "skipped", f"duplicate caption id {image}#{idx}; the first one is kept"))
                continue
            slot[idx] = text
    return {img: [t for _, t in sorted(slot.items())] for img, slot in captions.items()}, problems


def read_csv_captions(path: Path) -> tuple[dict[str, list[str]], Problems]:
    """CSV with a header naming an image column and a caption column (e.g. ``image,caption``)."""
    captions: dict[str, list[str]] = {}
    problems: Problems = []
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        img_col = next((reader.fieldnames[i] for i, f in enumerate(fields) if f in _IMAGE_COLUMNS), None) if reader.fieldnames else None
        cap_col = next((reader.fieldnames[i] for i, f in enumerate(fields) if f in _CAPTION_COLUMNS), None) if reader.fieldnames else None
        if img_col is None or cap_col is None:
            problems.append((path.name, "skipped",
                             f"CSV header must name an image column ({'/'.join(_IMAGE_COLUMNS)}) and a caption column "
                             f"({'/'.join(_CAPTION_COLUMNS)}); found {reader.fieldnames}"))
            return {}, problems
        for lineno, row in enumerate(reader, 2):
            where = f"{path.name}:{lineno}"
            image = _norm(row.get(img_col) or "")
            text = _clean_caption(row.get(cap_col) or "")
            if not image:
                problems.append((where, "skipped", "malformed row: no image"))
                continue
            if not text:
                problems.append((where, "skipped", f"empty caption for {image}"))
                continue
            _add(captions, image, text, where, problems)
    return captions, problems


def read_jsonl_captions(path: Path) -> tuple[dict[str, list[str]], Problems]:
    """JSON lines: ``{"image": "a.jpg", "caption": "..."}`` or ``{"image": ..., "captions": [...]}``."""
    captions: dict[str, list[str]] = {}
    problems: Problems = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                problems.append((where, "skipped", f"malformed JSON: {exc.msg}"))
                continue
            if not isinstance(obj, dict):
                problems.append((where, "skipped", "malformed line: not a JSON object"))
                continue
            image = next((obj[k] for k in _IMAGE_COLUMNS if isinstance(obj.get(k), str)), "")
            texts = obj.get("captions")
            if texts is None:
                texts = [next((obj[k] for k in _CAPTION_COLUMNS if isinstance(obj.get(k), str)), "")]
            if not image:
                problems.append((where, "skipped", "malformed line: no image field"))
                continue
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                problems.append((where, "skipped", f"malformed line: captions of {image} are not a list of strings"))
                continue
            for text in texts:
                text = _clean_caption(text)
                if not text:
                    problems.append((where, "skipped", f"empty caption for {_norm(image)}"))
                    continue
                _add(captions, _norm(image), text, where, problems)
    return captions, problems


def _add(captions: dict[str, list[str]], image: str, text: str, where: str, problems: Problems) -> None:
    existing = captions.setdefault(image, [])
    if text in existing:
        problems.append((where, "skipped", f"duplicate caption for {image}; kept once"))
        return
    existing.append(text)


def read_caption_file(path: Path) -> tuple[dict[str, list[str]], Problems]:
    """Pick the reader by extension (.csv, .jsonl/.json, anything else as a token file)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv_captions(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return read_jsonl_captions(path)
    return read_token_file(path)
