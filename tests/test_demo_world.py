"""The generated demo world: Flickr8k layout, truthful unique captions, determinism."""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets.demo import (
    COLOURS,
    DEFAULT_DEMO_IMAGES,
    DemoSummary,
    demo_world_matches,
    generate_demo_world,
)
from pipeline.errors import ConfigError

N = 60
SPLITS = ("Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt", "Flickr_8k.testImages.txt")
LINE = re.compile(r"^(demo_\d{5}\.jpg)#(\d)\t(\S.*)$")

# Words a reader accepts as naming each kind, colour and background (written here, not taken from the generator).
KIND_NAMES = {
    "dog": {"dog", "dogs", "puppy", "puppies", "pup", "pups"},
    "cat": {"cat", "cats", "kitten", "kittens", "kitty", "kitties"},
    "horse": {"horse", "horses", "pony", "ponies"},
    "bird": {"bird", "birds", "songbird", "songbirds"},
    "person": {"man", "men", "woman", "women", "person", "people", "guy", "guys", "lady", "ladies"},
    "ball": {"ball", "balls"},
    "car": {"car", "cars", "automobile", "automobiles", "vehicle", "vehicles"},
    "boat": {"boat", "boats", "sailboat", "sailboats"},
    "tree": {"tree", "trees"},
    "house": {"house", "houses", "home", "homes", "cottage", "cottages"},
    "kite": {"kite", "kites"},
    "flower": {"flower", "flowers", "blossom", "blossoms"},
}
COLOUR_NAMES = {c: {c} for c in COLOURS} | {"grey": {"grey", "gray"}, "yellow": {"yellow", "golden"}}
PLACE_WORDS = {
    "grass": {"grass", "grassy", "field", "lawn", "meadow", "park"},
    "snow": {"snow", "snowy"},
    "beach": {"beach", "sand", "sandy", "sea", "shore", "seashore", "ocean", "seaside"},
    "street": {"street", "road", "town"},
    "night": {"night", "stars", "starry", "dark"},
    "lake": {"lake", "water", "lakeshore"},
    "forest": {"forest", "woods", "trees"},
    "indoor": {"room", "indoors", "house", "floor"},
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _read_world(root: Path) -> tuple[dict[str, list[str]], list[dict]]:
    captions: dict[str, dict[int, str]] = defaultdict(dict)
    for line in (root / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        m = LINE.match(line)
        assert m, f"token line does not parse: {line!r}"
        captions[m.group(1)][int(m.group(2))] = m.group(3)
    scenes = [json.loads(line) for line in (root / "demo_scenes.jsonl").read_text(encoding="utf-8").splitlines()]
    return {k: [v[i] for i in sorted(v)] for k, v in captions.items()}, scenes


def _all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[DemoSummary, list]:
    events: list = []
    summary = generate_demo_world(tmp_path_factory.mktemp("demo"), n_images=N, seed=7, progress=events.append)
    return summary, events


def test_layout_and_counts(world):
    summary, _ = world
    root = summary.root
    assert (summary.n_images, summary.n_captions) == (N, 5 * N)
    assert summary.seconds > 0
    images = sorted(p.name for p in (root / "Flicker8k_Dataset").iterdir())
    assert images == [f"demo_{i:05d}.jpg" for i in range(1, N + 1)]
    for name in ("Flickr8k.token.txt", "demo_scenes.jsonl", *SPLITS):
        assert (root / name).is_file(), name
    assert DEFAULT_DEMO_IMAGES == 800


def test_token_lines_reference_images_with_five_distinct_captions(world):
    root = world[0].root
    captions, _ = _read_world(root)
    assert len(captions) == N
    for name, caps in captions.items():
        assert (root / "Flicker8k_Dataset" / name).is_file()
        assert len(caps) == 5 and len(set(caps)) == 5, (name, caps)
        assert all(c.endswith(" .") and c[0].isupper() for c in caps), caps


def test_captions_unique_across_the_world(world):
    captions, _ = _read_world(world[0].root)
    counts = Counter(c.lower() for caps in captions.values() for c in caps)
    assert [c for c, n in counts.items() if n > 1] == []


def test_captions_name_the_scene_kind_colour_place_and_count(world):
    captions, scenes = _read_world(world[0].root)
    assert [s["file"] for s in scenes] == sorted(captions)
    for s in scenes:
        caps = captions[s["file"]]
        for c in caps:
            w = _words(c)
            assert w & KIND_NAMES[s["kind"]], (s["kind"], c)
            assert w & COLOUR_NAMES[s["colour"]], (s["colour"], c)
            assert w & PLACE_WORDS[s["background"]], (s["background"], c)
            counted = w & {"two", "pair", "couple", "three"}
            if s["count"] == 1:
                assert not counted, c
            else:
                assert counted <= ({"three"} if s["count"] == 3 else {"two", "pair", "couple"}) and counted, c
        # the first caption uses the plain names, so that searching for them finds the photo
        first = _words(caps[0])
        plain = {"man": {"man", "men"}, "woman": {"woman", "women"}}.get(s["variant"], KIND_NAMES[s["kind"]])
        assert first & plain and s["colour"] in first, caps[0]


def test_captions_are_worded_differently(world):
    captions, _ = _read_world(world[0].root)
    openings = Counter(" ".join(c.split()[:2]) for caps in captions.values() for c in caps)
    assert len(openings) > 40
    lengths = [len(c.split()) for caps in captions.values() for c in caps]
    assert min(lengths) <= 6 and max(lengths) >= 14


def test_scene_records_match_the_layout(world):
    _, scenes = _read_world(world[0].root)
    assert len(scenes) == N
    assert len({s["kind"] for s in scenes}) >= 8 and len({s["background"] for s in scenes}) == 8
    assert len({s["colour"] for s in scenes}) >= 8 and {s["count"] for s in scenes} == {1, 2, 3}
    for s in scenes:
        assert len(s["boxes"]) == s["count"]
        for x0, y0, x1, y1 in s["boxes"] + [o["box"] for o in s["others"]]:
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240, s
        cx = (min(b[0] for b in s["boxes"]) + max(b[2] for b in s["boxes"])) / 2
        assert s["position"] == ("left" if cx < 128 else "right" if cx > 192 else "centre"), s
        biggest = max((b[2] - b[0]) * (b[3] - b[1]) for b in s["boxes"]) / (320 * 240)
        assert biggest >= 0.065 if s["size"] == "large" else biggest < 0.075, s
        assert all(o["kind"] != s["kind"] for o in s["others"])


def test_images_are_rgb_jpegs_of_the_requested_size_and_all_different(world):
    root = world[0].root
    seen = set()
    for p in sorted((root / "Flicker8k_Dataset").iterdir()):
        with Image.open(p) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (320, 240)), p.name
            seen.add(im.tobytes())
    assert len(seen) == N


def test_pixels_show_the_named_colour_where_the_object_is(world):
    root = world[0].root
    _, scenes = _read_world(root)
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float32)
    ok_inside = ok_contrast = 0
    for s in scenes:
        rgb = np.asarray(Image.open(root / "Flicker8k_Dataset" / s["file"]).reduce(2), dtype=np.float32)
        nearest = np.argmin(((rgb[:, :, None, :] - palette) ** 2).sum(-1), axis=2) == names.index(s["colour"])
        mask = np.zeros(nearest.shape, bool)
        for x0, y0, x1, y1 in s["boxes"]:
            mask[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = True
        inside = nearest[mask].mean()
        outside = nearest[~mask].mean() if (~mask).any() else 0.0
        ok_inside += inside >= 0.08
        ok_contrast += inside > outside
    assert ok_inside >= 0.95 * N and ok_contrast >= 0.9 * N, (ok_inside, ok_contrast)


def test_splits_are_disjoint_and_cover_every_image(world):
    root = world[0].root
    parts = [(root / f).read_text(encoding="utf-8").split() for f in SPLITS]
    names = [n for part in parts for n in part]
    assert len(names) == len(set(names)) == N
    assert set(names) == {p.name for p in (root / "Flicker8k_Dataset").iterdir()}
    assert [len(p) for p in parts] == [42, 6, 12]
    assert all(p == sorted(p) for p in parts)


def test_progress_reports_every_image(world):
    _, events = world
    assert {e.stage for e in events} == {"demo-world"}
    assert events[0].kind == "start" and events[-1].kind == "finish"
    assert [e.done for e in events if e.kind == "advance"] == list(range(1, N + 1))
    assert all(e.total == N for e in events)


def test_same_seed_gives_identical_bytes_and_another_seed_another_world(tmp_path):
    a = generate_demo_world(tmp_path / "a", n_images=24, seed=3)
    b = generate_demo_world(tmp_path / "b", n_images=24, seed=3)
    c = generate_demo_world(tmp_path / "c", n_images=24, seed=4)
    fa, fb, fc = _all_files(a.root), _all_files(b.root), _all_files(c.root)
    assert fa == fb
    assert set(fa) == set(fc)
    assert fa["Flickr8k.token.txt"] != fc["Flickr8k.token.txt"]
    assert sum(fa[k] != fc[k] for k in fa if k.endswith(".jpg")) == 24


def test_an_image_does_not_depend_on_how_many_come_after_it(tmp_path):
    small = generate_demo_world(tmp_path / "small", n_images=10, seed=5)
    large = generate_demo_world(tmp_path / "large", n_images=30, seed=5)
    for i in range(1, 11):
        name = f"Flicker8k_Dataset/demo_{i:05d}.jpg"
        assert (small.root / name).read_bytes() == (large.root / name).read_bytes()
    assert (large.root / "demo_scenes.jsonl").read_text().startswith((small.root / "demo_scenes.jsonl").read_text())
    assert (large.root / "Flickr8k.token.txt").read_text().startswith((small.root / "Flickr8k.token.txt").read_text())


def test_regenerating_smaller_removes_old_images_and_records_settings(tmp_path):
    generate_demo_world(tmp_path, n_images=30, seed=7)
    assert demo_world_matches(tmp_path, n_images=30, seed=7)
    generate_demo_world(tmp_path, n_images=12, seed=7)
    assert len(list((tmp_path / "Flicker8k_Dataset").iterdir())) == 12
    assert demo_world_matches(tmp_path, n_images=12, seed=7)
    assert not demo_world_matches(tmp_path, n_images=30, seed=7)
    assert not demo_world_matches(tmp_path / "missing")


def test_flickr8k_loader_reads_the_world_without_problems(world):
    from pipeline.datasets.flickr8k import load_flickr8k

    root = world[0].root
    collection = load_flickr8k(root, name="demo")
    assert collection.problems == []
    assert len(collection.items) == N
    captions, _ = _read_world(root)
    for item in collection.items:
        assert item.captions == captions[item.id]
    assert Counter(item.official_split for item in collection.items) == {"train": 42, "dev": 6, "test": 12}


def test_other_sizes_and_bad_arguments(tmp_path):
    summary = generate_demo_world(tmp_path / "wide", n_images=3, size=(200, 120))
    with Image.open(summary.root / "Flicker8k_Dataset" / "demo_00001.jpg") as im:
        assert im.size == (200, 120)
    with pytest.raises(ConfigError, match="at least one image"):
        generate_demo_world(tmp_path / "none", n_images=0)
    with pytest.raises(ConfigError, match="too small"):
        generate_demo_world(tmp_path / "tiny", n_images=2, size=(32, 32))
