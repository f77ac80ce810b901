"""Readers for caption files: Flickr8k token files, CSV and JSONL.

Each returns ``(captions, problems)`` where captions maps the image reference as
written in the file to its captions in file order, and problems lists
``(item, severity, reason)`` for every line that could not be used, naming the file
and line (``captions.csv:12``):

* a line that is not valid UTF-8 is skipped and said to be so (with the offending byte), never
  decoded into a file name that matches no photo;
* a caption longer than ``MAX_CAPTION_CHARS`` is skipped with its length: a caption is a sentence or
  two, and such a text is usually a quote left open in a CSV file (which swallows the lines after it:
  the problem names them) or a pasted paragraph, of which the text embedders would read only the
  beginning (all-MiniLM-L6-v2: 256 word pieces);
* blank lines are ignored, and said once per file (how many, and where).
"""
from __future__ import annotations

import codecs
import csv
import json
import unicodedata
from pathlib import Path
from typing import Iterator

Problems = list[tuple[str, str, str]]

MAX_CAPTION_CHARS = 1000          # longer captions are skipped with a problem naming the line and the length

_IMAGE_COLUMNS = ("image", "file", "filename", "file_name", "path", "image_id", "image_name")
_CAPTION_COLUMNS = ("caption", "text", "description", "comment")


def _norm(ref: str) -> str:
    return unicodedata.normalize("NFC", ref.strip().replace("\\", "/"))


def _clean_caption(text: str) -> str:
    return " ".join(text.split())


def _decoded_lines(path: Path, problems: Problems) -> Iterator[tuple[int, str]]:
    """(line number, text with its line end) of every line that is valid UTF-8 (a leading byte-order mark
    dropped); a line that is not is reported with the byte that is not, and skipped."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append((f"{path.name}:{lineno}", "skipped",
                                 f"the line is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start + 1}):"
                                 " skipped; save the file as UTF-8"))


def _too_long(text: str, image: str) -> str | None:
    """Why a caption is refused for its length, or None."""
    if len(text) <= MAX_CAPTION_CHARS:
        return None
    return (f"the caption of {image} is {len(text):,} characters, more than {MAX_CAPTION_CHARS:,}: skipped "
            "(a quote left open?)")


def _blank_lines(path: Path, lines: list[int], problems: Problems) -> None:
    """One problem for every blank line of a file: how many and where."""
    if not lines:
        return
    shown = ", ".join(map(str, lines[:5])) + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")
    problems.append((path.name, "warning", f"{len(lines)} blank line{'' if len(lines) == 1 else 's'} ignored "
                                           f"(line{'' if len(lines) == 1 else 's'} {shown})"))


def read_token_file(path: Path) -> tuple[dict[str, list[str]], Problems]:
    """Flickr8k ``Flickr8k.token.txt``: ``<image>#<n>\\t<caption>`` per line."""
    captions: dict[str, dict[int, str]] = {}
    problems: Problems = []
    blank: list[int] = []
    label = path.name
    for lineno, raw in _decoded_lines(path, problems):
        line = raw.rstrip("\n\r")
        if not line.strip():
            blank.append(lineno)
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
        if too_long := _too_long(text, image):
            problems.append((where, "skipped", too_long))
            continue
        slot = captions.setdefault(image, {})
        if idx is None:
            idx = max(slot, default=-1) + 1
        if idx in slot:
            problems.append((where, "skipped", f"duplicate caption id {image}#{idx}; the first one is kept"))
            continue
        slot[idx] = text
    _blank_lines(path, blank, problems)
    return {img: [t for _, t in sorted(slot.items())] for img, slot in captions.items()}, problems


def read_csv_captions(path: Path) -> tuple[dict[str, list[str]], Problems]:
    """CSV with a header naming an image column and a caption column (e.g. ``image,caption``)."""
    captions: dict[str, list[str]] = {}
    problems: Problems = []
    blank: list[int] = []
    numbers: list[int] = []            # the file's line number of each line the CSV reader was given

    def lines() -> Iterator[str]:
        for lineno, text in _decoded_lines(path, problems):
            numbers.append(lineno)
            yield text

    reader = csv.reader(lines())
    rows = iter(reader)
    header: list[str] = []
    consumed = 0
    for row in rows:                   # the header: the first row that is not blank
        start, consumed = numbers[consumed], reader.line_num
        if _blank(row):
            blank.append(start)
            continue
        header = row
        break
    fields = [f.strip().lower() for f in header]
    img_col = next((i for i, f in enumerate(fields) if f in _IMAGE_COLUMNS), None)
    cap_col = next((i for i, f in enumerate(fields) if f in _CAPTION_COLUMNS), None)
    if img_col is None or cap_col is None:
        problems.append((path.name, "skipped",
                         f"CSV header must name an image column ({'/'.join(_IMAGE_COLUMNS)}) and a caption column "
                         f"({'/'.join(_CAPTION_COLUMNS)}); found {header or None}"))
        return {}, problems
    for row in rows:
        start, consumed = numbers[consumed], reader.line_num     # the row's first line (a field may span several)
        where = f"{path.name}:{start}"
        if _blank(row):
            blank.append(start)
            continue
        image = _norm(row[img_col] if img_col < len(row) else "")
        text = _clean_caption(row[cap_col] if cap_col < len(row) else "")
        if not image:
            problems.append((where, "skipped", "malformed row: no image"))
            continue
        if not text:
            problems.append((where, "skipped", f"empty caption for {image}"))
            continue
        if too_long := _too_long(text, image):
            last = numbers[consumed - 1]
            if last > start:
                too_long = too_long.replace("(a quote left open?)", f"(it spans lines {start}-{last}: a quote left open?)")
            problems.append((where, "skipped", too_long))
            continue
        _add(captions, image, text, where, problems)
    _blank_lines(path, blank, problems)
    return captions, problems


def _blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def read_jsonl_captions(path: Path) -> tuple[dict[str, list[str]], Problems]:
    """JSON lines: ``{"image": "a.jpg", "caption": "..."}`` or ``{"image": ..., "captions": [...]}``."""
    captions: dict[str, list[str]] = {}
    problems: Problems = []
    blank: list[int] = []
    for lineno, raw in _decoded_lines(path, problems):
        if not raw.strip():
            blank.append(lineno)
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
            if too_long := _too_long(text, _norm(image)):
                problems.append((where, "skipped", too_long))
                continue
            _add(captions, _norm(image), text, where, problems)
    _blank_lines(path, blank, problems)
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
