"""Data set loaders on good and bad input, and the split rules (determinism, no leakage)."""
from __future__ import annotations

import json

import pytest

from pipeline.datasets.flickr8k import load_flickr8k
from pipeline.datasets.folder import load_folder
from pipeline.errors import DataError
from pipeline.splits import SplitItem, assign_splits
from pipeline.stages.run import run_stage
from pipeline.stages.ingest import IngestStage
from tests.fixtures.photos import build_flickr8k_like, make_photo


def test_flickr8k_official_lists_and_kaggle_layout(tmp_path):
    root = tmp_path / "f8k"
    build_flickr8k_like(root, n=12)
    (root / "Flickr_8k.testImages.txt").write_text("\n".join(f"photo_{i:03d}.jpg" for i in range(4)) + "\n")
    col = load_flickr8k(root)
    assert len(col.items) == 12 and col.benchmark
    assert sum(1 for i in col.items if i.official_split == "test") == 4
    # Kaggle's layout: Images/ and captions.txt as CSV
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    (root / "Flicker8k_Dataset").rename(kaggle / "Images")
    lines = ["image,caption"] + [f"photo_{i:03d}.jpg,a photo number {i}" for i in range(12)]
    (kaggle / "captions.txt").write_text("\n".join(lines) + "\n")
    col = load_flickr8k(kaggle)
    assert len(col.items) == 12 and col.items[0].captions == ["a photo number 0"]


def test_missing_flickr8k_says_what_to_download(tmp_path):
    with pytest.raises(DataError, match="Flickr8k_Dataset.zip"):
        load_flickr8k(tmp_path / "nothing")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "token"])
def test_folder_with_partial_captions(tmp_path, fmt):
    root = tmp_path / "my photos"
    make_photo(root / "holiday" / "beach day.jpg", (230, 210, 120))
    make_photo(root / "holiday" / "café crème.png", (120, 80, 40))
    make_photo(root / "snow" / "dog.webp", (240, 240, 250), fmt="WEBP")
    make_photo(root / "uncaptioned.jpg", (10, 10, 10))
    (root / ".hidden").mkdir()
    make_photo(root / ".hidden" / "secret.jpg")
    caps = {"holiday/beach day.jpg": ["a sunny beach", "sand and sea"], "café crème.png": ["a cup of coffee"],
            "snow/dog.webp": ["a dog in the snow"], "ghost.jpg": ["a photo that is not there"]}
    cap_file = tmp_path / f"captions.{ 'txt' if fmt == 'token' else fmt}"
    if fmt == "csv":
        rows = ["file,caption"] + [f'"{k}","{c}"' for k, cs in caps.items() for c in cs]
        cap_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        lines = [json.dumps({"image": k, "captions": cs}) for k, cs in caps.items()] + ["{not json"]
        cap_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        lines = [f"{k}#{n}\t{c}" for k, cs in caps.items() for n, c in enumerate(cs)]
        cap_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    col = load_folder(root, cap_file)
    by_id = col.by_id()
    assert set(by_id) == {"holiday/beach day.jpg", "holiday/café crème.png", "snow/dog.webp", "uncaptioned.jpg"}
    assert by_id["holiday/beach day.jpg"].captions == ["a sunny beach", "sand and sea"]
    assert by_id["holiday/café crème.png"].captions == ["a cup of coffee"]  # matched by file name
    assert not by_id["uncaptioned.jpg"].captions and not col.benchmark
    assert any(item == "ghost.jpg" and "no such photo" in reason for item, _, reason in col.problems)
    if fmt == "jsonl":
        assert any("malformed JSON" in reason for _, _, reason in col.problems)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "token"])
def test_a_caption_file_says_which_lines_are_not_utf8_blank_or_too_long(tmp_path, fmt):
    """A line in another encoding is named as such with its number (not decoded into a file name that matches no
    photo); blank lines are said once with where they are; a 7,199-character caption is skipped with its length;
    every good line is kept."""
    root = tmp_path / "photos"
    for name in ("café.jpg", "dog.jpg", "long.jpg"):
        make_photo(root / name)
    long_text = ("a dog " * 1200)[:7199]
    assert len(long_text) == 7199

    def line(image: str, caption: str, n: int = 0) -> str:
        return {"csv": f'"{image}","{caption}"', "jsonl": json.dumps({"image": image, "caption": caption}, ensure_ascii=False),
                "token": f"{image}#{n}\t{caption}"}[fmt]

    body = [line("dog.jpg", "a dog on the grass"), "", line("café.jpg", "a cup of coffee"), "   ",
            line("long.jpg", long_text), line("dog.jpg", "a brown dog", 1)]
    text = "\n".join((["image,caption"] if fmt == "csv" else []) + body) + "\n"
    data = text.encode("utf-8").replace("café.jpg".encode("utf-8"), "café.jpg".encode("latin-1"))
    cap_file = tmp_path / f"captions.{'txt' if fmt == 'token' else fmt}"
    cap_file.write_bytes(data)
    first = 2 if fmt == "csv" else 1                   # the line number of the first caption line
    position = data.splitlines()[first + 1].index(b"\xe9") + 1

    col = load_folder(root, cap_file)
    problems = {item: (severity, reason) for item, severity, reason in col.problems}
    assert col.by_id()["dog.jpg"].captions == ["a dog on the grass", "a brown dog"]
    assert not col.by_id()["café.jpg"].captions and not col.by_id()["long.jpg"].captions
    assert not any("no such photo" in reason for _, reason in problems.values()), problems
    assert problems[f"{cap_file.name}:{first + 2}"] == (
        "skipped", f"the line is not valid UTF-8 (byte 0xe9 at position {position}): skipped; save the file as UTF-8")
    assert problems[cap_file.name] == ("warning", f"2 blank lines ignored (lines {first + 1}, {first + 3})")
    assert problems[f"{cap_file.name}:{first + 4}"] == (
        "skipped", "the caption of long.jpg is 7,199 characters, more than 1,000: skipped (a quote left open?)")
    assert len(problems) == 3, problems


def test_a_csv_quote_left_open_is_named_with_the_lines_it_swallowed(tmp_path):
    root = tmp_path / "photos"
    for i in range(40):
        make_photo(root / f"p{i}.jpg")
    rows = ["image,caption", 'p0.jpg,"a dog'] + [f"p{i}.jpg,caption number {i} of a long list of photos" for i in range(1, 40)]
    (tmp_path / "caps.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    col = load_folder(root, tmp_path / "caps.csv")
    [(item, severity, reason)] = col.problems
    assert item == "caps.csv:2" and severity == "skipped", col.problems
    assert "p0.jpg is 1," in reason and "(it spans lines 2-41: a quote left open?)" in reason, reason


def test_folder_ingest_makes_captioned_the_reference_db(tmp_path, workspace_factory):
    root = tmp_path / "photos"
    for i in range(6):
        make_photo(root / f"p{i}.jpg", (40 * i, 100, 100))
    (tmp_path / "caps.csv").write_text("image,caption\n" + "".join(f"p{i}.jpg,photo {i}\n" for i in range(4)))
    ws = workspace_factory(data={"source": "folder", "path": str(root), "captions": str(tmp_path / "caps.csv")})
    run_stage(IngestStage(ws))
    assert ws.store.image_ids("reference") == [f"p{i}.jpg" for i in range(4)]
    assert ws.store.image_ids("target") == ["p4.jpg", "p5.jpg"]


def test_empty_folder_and_missing_caption_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no photos found"):
        load_folder(tmp_path / "empty")
    make_photo(tmp_path / "one" / "a.jpg")
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "one", tmp_path / "nope.csv")


def test_splits_are_deterministic_and_leak_nothing():
    items = [SplitItem(f"img{i}.jpg", True, "test" if i < 30 else "train") for i in range(200)]
    a = assign_splits(items, 50, seed=13)
    assert a == assign_splits(list(reversed(items)), 50, seed=13)
    assert sum(v == "target" for v in a.values()) == 50
    assert a != assign_splits(items, 50, seed=14)
    official = assign_splits(items, 50, seed=13, official_test_targets=True)
    targets = {k for k, v in official.items() if v == "target"}
    assert len(targets) == 30 and all(int(k[3:-4]) < 30 for k in targets)
    # growing the collection keeps most targets where they were
    grown = assign_splits(items + [SplitItem(f"new{i}.jpg", True) for i in range(20)], 50, seed=13)
    kept = {k for k, v in a.items() if v == "target"} & {k for k, v in grown.items() if v == "target"}
    assert len(kept) >= 40


def test_target_captions_never_in_reference_db(flickr8k_like, workspace_factory):
    ws = workspace_factory(data={"source": "flickr8k", "path": str(flickr8k_like["root"]), "n_targets": 10})
    run_stage(IngestStage(ws))
    targets = set(ws.store.image_ids("target"))
    db = ws.store.reference_db_captions()
    assert targets and not (targets & set(db))
    target_texts = {t for tid, caps in ws.store.reference_captions(list(targets)).items() for t in caps}
    assert not target_texts & {t for caps in db.values() for t in caps}
