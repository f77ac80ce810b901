"""The demo world: a deterministic, generated photo collection in the Flickr8k layout.

Every photo is a rendered scene (one to three objects of one kind, one colour, on one
of eight backgrounds, sometimes with a second object) and gets five differently
worded, truthful captions in the style of Flickr8k. The ground truth of every scene
is written to ``demo_scenes.jsonl`` so that tests can check what neighbours share.

Image ``i`` depends only on ``(seed, i)``; captions also avoid every caption of the
images before it, so that no caption text occurs twice in the world.
"""
from __future__ import annotations

import io
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

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
CAPTIONS_PER_IMAGE = 5
JPEG_QUALITY = 90
_SS = 2  # scenes are drawn at twice the size and reduced, which smooths the edges

RGB = tuple[int, int, int]


@dataclass
class DemoSummary:
    root: Path
    n_images: int
    n_captions: int
    seconds: float


# --------------------------------------------------------------------------- vocabulary

COLOURS: dict[str, RGB] = {
    "red": (200, 32, 36), "blue": (36, 78, 205), "green": (46, 150, 52), "yellow": (242, 206, 40),
    "white": (243, 243, 239), "black": (28, 28, 30), "brown": (122, 76, 40), "orange": (242, 132, 28),
    "pink": (240, 132, 178), "purple": (128, 56, 165), "grey": (132, 132, 137),
}
_KIND_COLOUR_RGB: dict[tuple[str, str], RGB] = {("dog", "yellow"): (222, 182, 92), ("horse", "brown"): (130, 80, 45)}

COLOUR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLOURS}
COLOUR_WORDS["grey"] = ("grey", "gray")
COLOUR_WORDS["yellow"] = ("yellow", "golden")

BACKGROUNDS = ("grass", "snow", "beach", "street", "night", "lake", "forest", "indoor")
# Object colours that would melt into a background are not used as the main object's colour there.
_CLASHES = {
    "grass": {"green"}, "snow": {"white"}, "beach": {"yellow"}, "street": {"grey"},
    "night": {"black", "blue"}, "lake": {"blue"}, "forest": {"green", "brown"}, "indoor": {"brown"},
}


@dataclass(frozen=True)
class KindSpec:
    colours: tuple[str, ...]
    backgrounds: tuple[str, ...]
    actions: tuple[str, ...]
    nouns: tuple[tuple[str, str], ...]      # (singular, plural); the first one is the plain name
    colour_nouns: str = ""                  # "fur" -> "a dog with brown fur"


_ALL = BACKGROUNDS
_OUT = tuple(b for b in BACKGROUNDS if b != "indoor")
KINDS: dict[str, KindSpec] = {
    "dog": KindSpec(("brown", "black", "white", "yellow", "grey"), _ALL, ("stand", "run", "jump", "sit"),
                    (("dog", "dogs"), ("puppy", "puppies"), ("pup", "pups")), "fur"),
    "cat": KindSpec(("black", "white", "orange", "grey", "brown"), _ALL, ("sit", "stand", "walk"),
                    (("cat", "cats"), ("kitten", "kittens"), ("kitty", "kitties")), "fur"),
    "horse": KindSpec(("brown", "black", "white", "grey"), _OUT, ("stand", "run"),
                      (("horse", "horses"), ("pony", "ponies")), "coat"),
    "bird": KindSpec(("red", "blue", "yellow", "black", "white"), _ALL, ("fly", "perch"),
                     (("bird", "birds"), ("songbird", "songbirds")), "feathers"),
    "person": KindSpec(("red", "blue", "green", "yellow", "white", "black", "orange", "pink", "purple"), _ALL,
                       ("stand", "walk", "run"), (("person", "people"),)),
    "ball": KindSpec(("red", "blue", "green", "yellow", "white", "orange", "pink", "purple"), _ALL, ("air", "ground"),
                     (("ball", "balls"), ("toy ball", "toy balls"))),
    "car": KindSpec(("red", "blue", "green", "yellow", "white", "black", "orange", "grey", "purple"),
                    ("grass", "snow", "beach", "street", "night", "lake", "forest"), ("drive", "park"),
                    (("car", "cars"), ("automobile", "automobiles"), ("vehicle", "vehicles"))),
    "boat": KindSpec(("red", "blue", "white", "yellow", "orange", "green"), ("lake", "beach"), ("sail", "beached"),
                     (("boat", "boats"), ("sailboat", "sailboats"), ("sailing boat", "sailing boats"))),
    "tree": KindSpec(("green", "orange", "yellow", "red", "pink"), _OUT, ("still",), (("tree", "trees"),), "leaves"),
    "house": KindSpec(("red", "blue", "white", "yellow", "green", "pink", "grey", "brown"), _OUT, ("still",),
                      (("house", "houses"), ("home", "homes"), ("cottage", "cottages"))),
    "kite": KindSpec(("red", "blue", "green", "yellow", "orange", "pink", "purple"),
                     ("grass", "snow", "beach", "street", "night", "lake"), ("fly",), (("kite", "kites"),)),
    "flower": KindSpec(("red", "yellow", "pink", "purple", "white", "orange", "blue"),
                       ("grass", "beach", "street", "night", "lake", "forest", "indoor"), ("bloom",),
                       (("flower", "flowers"), ("blossom", "blossoms")), "petals"),
}
_PERSON_NOUNS = {"man": (("man", "men"), ("guy", "guys"), ("person", "people")),
                 "woman": (("woman", "women"), ("lady", "ladies"), ("person", "people"))}
_PERSON_GARMENT = {"man": ("shirt", "shirts"), "woman": ("dress", "dresses")}
_PAINTED = {"car", "house", "boat"}

KIND_WORDS: dict[str, tuple[str, ...]] = {
    kind: tuple(sorted({w for pair in spec.nouns for w in pair})) for kind, spec in KINDS.items()
}
KIND_WORDS["person"] = tuple(sorted({w for nouns in _PERSON_NOUNS.values() for pair in nouns for w in pair}))

_FLYING = {"fly", "air"}
_JUMP_LIFT = 0.22   # a jumping dog is lifted by this much of its height above its shadow
_MOVING = {"run", "jump", "walk", "drive", "fly", "sail", "air"}

# (third person singular, plural, participle) per kind and action.
_VERBS: dict[str, list[tuple[str, str, str]]] = {
    "stand": [("stands", "stand", "standing"), ("waits", "wait", "waiting")],
    "run": [("runs", "run", "running"), ("plays", "play", "playing"), ("races", "race", "racing"),
            ("dashes", "dash", "dashing")],
    "jump": [("jumps", "jump", "jumping"), ("leaps", "leap", "leaping"), ("plays", "play", "playing")],
    "sit": [("sits", "sit", "sitting"), ("rests", "rest", "resting")],
    "walk": [("walks", "walk", "walking"), ("strolls", "stroll", "strolling")],
    "fly": [("flies", "fly", "flying"), ("soars", "soar", "soaring"), ("glides", "glide", "gliding")],
    "perch": [("perches", "perch", "perching"), ("sits", "sit", "sitting"), ("stands", "stand", "standing")],
    "air": [("flies through the air", "fly through the air", "flying through the air"),
            ("bounces", "bounce", "bouncing"), ("is in mid-air", "are in mid-air", "in mid-air")],
    "ground": [("lies", "lie", "lying"), ("rests", "rest", "resting"), ("sits", "sit", "sitting")],
    "drive": [("drives", "drive", "driving"), ("speeds", "speed", "speeding"), ("moves", "move", "moving")],
    "park": [("is parked", "are parked", "parked"), ("sits", "sit", "sitting"), ("waits", "wait", "waiting")],
    "sail": [("sails", "sail", "sailing"), ("floats", "float", "floating"), ("drifts", "drift", "drifting")],
    "beached": [("rests", "rest", "resting"), ("lies", "lie", "lying"), ("sits", "sit", "sitting")],
    "still": [("stands", "stand", "standing"), ("sits", "sit", "sitting")],
    "bloom": [("blooms", "bloom", "blooming"), ("grows", "grow", "growing")],
}
_KIND_VERBS: dict[tuple[str, str], list[tuple[str, str, str]]] = {
    ("horse", "run"): [("gallops", "gallop", "galloping"), ("runs", "run", "running")],
    ("person", "run"): [("runs", "run", "running"), ("jogs", "jog", "jogging")],
    ("person", "stand"): [("stands", "stand", "standing"), ("poses", "pose", "posing"), ("waits", "wait", "waiting")],
    ("cat", "walk"): [("walks", "walk", "walking"), ("prowls", "prowl", "prowling")],
    ("tree", "still"): [("stands", "stand", "standing"), ("grows", "grow", "growing")],
    ("kite", "fly"): [("flies", "fly", "flying"), ("soars", "soar", "soaring"), ("floats", "float", "floating")],
    ("dog", "run"): [("runs", "run", "running"), ("plays", "play", "playing"), ("races", "race", "racing"),
                     ("dashes", "dash", "dashing"), ("romps", "romp", "romping")],
}

_PLACES: dict[str, dict[str, tuple[str, ...]]] = {
    "grass": {"static": ("on the grass", "in a grassy field", "on a green lawn", "in a field of grass", "in the park"),
              "moving": ("across the grass", "through a grassy field", "across a green lawn", "through the grass"),
              "sky": ("over a grassy field", "above the grass", "over the field", "above a green meadow"),
              "lead": ("On the grass", "In a grassy field", "Out on the lawn", "In a green meadow")},
    "snow": {"static": ("in the snow", "on a snowy hill", "in a snowy field", "on the snow"),
             "moving": ("through the snow", "across the snow", "through a snowy field", "across a snowy field"),
             "sky": ("over the snow", "above a snowy field", "over the snowy hills"),
             "lead": ("In the snow", "On a snowy day", "Out in the snow", "In a snowy field")},
    "beach": {"static": ("on the beach", "on the sand", "at the beach", "by the sea", "at the seashore"),
              "moving": ("along the beach", "across the sand", "along the shore", "on the beach"),
              "sky": ("over the beach", "above the sea", "over the sand", "above the shore"),
              "lead": ("At the beach", "On a sandy beach", "By the ocean", "At the seaside")},
    "street": {"static": ("on the street", "on a city street", "in the road", "in town", "on the road"),
               "moving": ("down the street", "along a city street", "across the road", "along the road"),
               "sky": ("above the street", "over a city street", "above the road"),
               "lead": ("On a city street", "In town", "Out on the street", "On the road")},
    "night": {"static": ("at night", "under the night sky", "under the stars", "in the dark", "beneath a starry sky"),
              "moving": ("through the night", "under the stars", "in the dark", "at night"),
              "sky": ("in the night sky", "across the night sky", "under the stars", "against the dark sky"),
              "lead": ("At night", "Under a starry sky", "In the dark of night", "Beneath the stars")},
    "lake": {"static": ("by the lake", "at the lake", "near the water", "at the edge of a lake", "by the water"),
             "moving": ("along the lake shore", "beside the lake", "by the water", "along the water"),
             "sky": ("over the lake", "above the water", "over a calm lake"),
             "lead": ("By the lake", "At the lake", "On a lakeshore", "Beside a lake")},
    "forest": {"static": ("in the forest", "in the woods", "among the trees", "on a forest path"),
               "moving": ("through the forest", "through the woods", "along a forest path", "among the trees"),
               "sky": ("above the forest", "in the forest", "among the trees"),
               "lead": ("In the woods", "Deep in the forest", "Among tall trees", "In a forest")},
    "indoor": {"static": ("in a room", "indoors", "inside a house", "in a living room", "on the floor of a room"),
               "moving": ("across the room", "across the floor", "through the living room", "indoors"),
               "sky": ("in the room", "inside a room", "in a living room", "indoors"),
               "lead": ("Indoors", "Inside a house", "In a living room", "In a room")},
}
_BOAT_PLACES = {
    "lake": ("on the lake", "on the water", "on a calm lake", "out on the lake"),
    "beach": ("on the beach", "on the sand", "on the shore", "at the beach"),
}

_POSITIONS = {
    "left": ("on the left", "on the left side", "on the left side of the picture", "to the left of the frame",
             "at the left of the photo"),
    "centre": ("in the middle", "in the centre of the picture", "in the middle of the frame",
               "at the centre of the photo"),
    "right": ("on the right", "on the right side", "on the right side of the picture", "to the right of the frame",
              "at the right of the photo"),
}
_CORNERS = {"top": ("in the upper {h} part of the picture", "at the top {h} of the frame", "high up on the {h}"),
            "bottom": ("in the lower {h} part of the picture", "at the bottom {h} of the frame", "low down on the {h}")}
_SIZE_WORDS = {"large": ("large", "big"), "small": ("small", "little", "tiny")}
_PHOTO_OF = ("A photo of", "A picture of", "An image of", "A snapshot of")
_COUNTS = {2: ("two", "two", "a pair of", "a couple of"), 3: ("three", "three", "a group of three")}


# --------------------------------------------------------------------------- scenes

@dataclass
class SceneObject:
    kind: str
    colour: str
    action: str
    variant: str
    facing: int                          # 1 faces right, -1 faces left
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    rgb: RGB
    lift: float = 0.0                    # how far a jumping object is above its shadow, in pixels

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2


@dataclass
class Scene:
    image_id: str
    background: str
    geometry: dict[str, float]
    main: list[SceneObject]
    others: list[SceneObject]
    size: str
    position: str
    vertical: str
    area_fraction: float

    @property
    def kind(self) -> str:
        return self.main[0].kind

    @property
    def colour(self) -> str:
        return self.main[0].colour

    @property
    def count(self) -> int:
        return len(self.main)

    @property
    def action(self) -> str:
        return self.main[0].action

    @property
    def variant(self) -> str:
        return self.main[0].variant

    def record(self) -> dict:
        def box(o: SceneObject) -> list[int]:
            return [int(round(v)) for v in o.box]

        w, h = self.geometry["width"], self.geometry["height"]
        return {
            "image_id": self.image_id, "file": f"{self.image_id}.jpg", "kind": self.kind, "colour": self.colour,
            "count": self.count, "size": self.size, "position": self.position, "vertical": self.vertical,
            "background": self.background, "action": self.action, "variant": self.variant,
            "area_fraction": round(self.area_fraction, 4), "boxes": [box(o) for o in self.main],
            "others": [{"kind": o.kind, "colour": o.colour, "action": o.action, "variant": o.variant,
                        "size": "small", "position": _horizontal_label(o.cx, w),
                        "vertical": _vertical_label((o.box[1] + o.box[3]) / 2, h), "box": box(o)} for o in self.others],
        }


def _aspect(kind: str, action: str, variant: str) -> float:
    """Width over height of an object's box."""
    return {
        "dog": 0.9 if action == "sit" else 1.45, "cat": 0.72 if action == "sit" else 1.3, "horse": 1.2,
        "bird": 1.6 if action == "fly" else 0.8, "person": 0.56 if action == "run" else 0.44, "ball": 1.0,
        "car": 2.1, "boat": 1.0, "tree": 0.62 if variant == "pine" else 0.82, "house": 1.1, "kite": 0.62,
        "flower": 0.56,
    }[kind]


def _horizontal_label(cx: float, width: float) -> str:
    return "left" if cx < 0.4 * width else "right" if cx > 0.6 * width else "centre"


def _vertical_label(cy: float, height: float) -> str:
    return "top" if cy < 0.42 * height else "bottom" if cy > 0.58 * height else "middle"


def _pick_action(kind: str, background: str, rng: random.Random) -> str:
    if kind == "boat":
        return "sail" if background == "lake" else "beached"
    return rng.choice(KINDS[kind].actions)


def _pick_variant(kind: str, colour: str, rng: random.Random) -> str:
    if kind == "person":
        return rng.choice(("man", "woman"))
    if kind == "tree":
        return rng.choice(("pine", "round")) if colour == "green" else "round"
    return ""


def _object_rgb(kind: str, colour: str, rng: random.Random) -> RGB:
    base = _KIND_COLOUR_RGB.get((kind, colour), COLOURS[colour])
    k = rng.uniform(0.95, 1.06)
    return tuple(int(min(255, max(0, c * k + rng.uniform(-6, 6)))) for c in base)  # type: ignore[return-value]


def _geometry(background: str, rng: random.Random, width: int, height: int) -> dict[str, float]:
    hz = {"grass": (0.32, 0.46), "snow": (0.30, 0.44), "beach": (0.34, 0.44), "street": (0.38, 0.48),
          "night": (0.60, 0.70), "lake": (0.30, 0.38), "forest": (0.60, 0.70), "indoor": (0.55, 0.64)}[background]
    geo = {"width": float(width), "height": float(height), "horizon": rng.uniform(*hz)}
    if background == "lake":
        geo["shore"] = rng.uniform(0.80, 0.86)
    if background == "beach":
        geo["sand"] = geo["horizon"] + rng.uniform(0.10, 0.14)
    return geo


def _baseline_range(kind: str, action: str, background: str, geo: dict[str, float], far: bool) -> tuple[float, float]:
    """Where the bottom of a standing object may be, as fractions of the height."""
    if kind == "boat" and action == "sail":
        top = geo["horizon"] + 0.35 * (geo["shore"] - geo["horizon"])
        return top, geo["shore"] - 0.02
    low = geo["shore"] + 0.05 if background == "lake" else min(max(geo["horizon"] + 0.18, 0.82), 0.94)
    if far and background != "lake":
        return max(geo["horizon"] + 0.12, low - 0.1), low
    return low, 0.975


def _place_group(objs: list[tuple[str, str, str]], area: float, where: str, geo: dict[str, float],
                 background: str, rng: random.Random) -> list[tuple[float, float, float, float]]:
    """Boxes for objects of one group side by side, about ``area`` (fraction of the frame) in all."""
    W, H = geo["width"], geo["height"]
    kind, action = objs[0][0], objs[0][1]
    flying = action in _FLYING
    each = area * W * H / len(objs)
    sizes = []
    for _, a, v in objs:
        ar = _aspect(kind, a, v)
        h = math.sqrt(each * rng.uniform(0.9, 1.1) / ar)
        sizes.append([ar * h, h])
    if flying:
        max_h = 0.58 * H
        lo, hi = 0.0, 0.0
    else:
        lo, hi = _baseline_range(kind, action, background, geo, far=False)
        max_h = (lo - 0.03) * H
    tallest = max(h for _, h in sizes)
    gap = 0.1 * sum(w for w, _ in sizes) / len(sizes)
    total_w = sum(w for w, _ in sizes) + gap * (len(sizes) - 1)
    scale = min(1.0, max_h / tallest, 0.94 * W / total_w)
    sizes = [[w * scale, h * scale] for w, h in sizes]
    gap *= scale
    total_w = sum(w for w, _ in sizes) + gap * (len(sizes) - 1)
    cx = {"left": 0.24, "centre": 0.5, "right": 0.76}[where] * W + rng.uniform(-0.04, 0.04) * W
    x = min(max(cx - total_w / 2, 0.03 * W), 0.97 * W - total_w)
    base = rng.uniform(lo, hi) * H
    cy = rng.uniform(0.2, 0.32) * H
    boxes = []
    for w, h in sizes:
        if flying:
            y_mid = cy + rng.uniform(-0.05, 0.05) * H
            y0 = min(max(y_mid - h / 2, 0.02 * H), 0.62 * H - h)
            y0 = max(y0, 0.01 * H)
            boxes.append((x, y0, x + w, y0 + h))
        else:
            y1 = min(base + rng.uniform(-0.015, 0.015) * H, 0.985 * H)
            boxes.append((x, y1 - h, x + w, y1))
        x += w + gap
    return boxes


def _place_other(kind: str, action: str, variant: str, main_boxes: list, geo: dict[str, float], background: str,
                 rng: random.Random) -> tuple[float, float, float, float] | None:
    """A small box for a second object beside the main group, or None when there is no room."""
    W, H = geo["width"], geo["height"]
    ar = _aspect(kind, action, variant)
    h = math.sqrt(rng.uniform(0.018, 0.035) * W * H / ar)
    w = ar * h
    gx0 = min(b[0] for b in main_boxes) - 0.03 * W
    gx1 = max(b[2] for b in main_boxes) + 0.03 * W
    gaps = [(0.03 * W, gx0), (gx1, 0.97 * W)]
    fits = [(a, b) for a, b in gaps if b - a >= w]
    if action in _FLYING:
        top_free = min(b[1] for b in main_boxes)
        if not fits and top_free > h + 0.06 * H:
            fits = [(0.03 * W, 0.97 * W)]
            y0 = rng.uniform(0.02 * H, top_free - h - 0.03 * H)
        else:
            y0 = rng.uniform(0.06, 0.2) * H
    else:
        lo, hi = _baseline_range(kind, action, background, geo, far=True)
        y1 = rng.uniform(lo, hi) * H
        h = min(h, y1 - 0.04 * H)
        w = ar * h
        fits = [(a, b) for a, b in fits if b - a >= w]
        y0 = y1 - h
    if not fits:
        return None
    a, b = rng.choice(fits)
    x0 = rng.uniform(a, b - w)
    return (x0, y0, x0 + w, y0 + h)


def sample_scene(seed: int, index: int, size: tuple[int, int] = (320, 240)) -> Scene:
    """The scene of image ``index`` (1-based) for ``seed``: depends on nothing else."""
    rng = random.Random(f"capsearch-demo-scene:{seed}:{index}")
    W, H = size
    kind = rng.choice(sorted(KINDS))
    spec = KINDS[kind]
    background = rng.choice(spec.backgrounds)
    colour = rng.choice([c for c in spec.colours if c not in _CLASHES[background]])
    action = _pick_action(kind, background, rng)
    variant = _pick_variant(kind, colour, rng)
    count = rng.choices((1, 2, 3), weights=(55, 30, 15))[0]
    large = rng.random() < 0.55
    geo = _geometry(background, rng, W, H)
    area = rng.uniform(0.24, 0.42) if large else rng.uniform(0.025, 0.055) * (1 + 0.25 * (count - 1))
    where = rng.choice(("left", "centre", "right"))
    facing = rng.choice((1, -1))
    objs = [(kind, action, variant) for _ in range(count)]
    boxes = _place_group(objs, area, where, geo, background, rng)
    lifts = [0.0] * len(boxes)
    if action == "jump":
        lifts = [max(0.0, min(_JUMP_LIFT * (b[3] - b[1]), b[1] - 0.02 * H)) for b in boxes]
        boxes = [(x0, y0 - k, x1, y1 - k) for (x0, y0, x1, y1), k in zip(boxes, lifts)]
    main = [SceneObject(kind, colour, action, variant, facing if rng.random() < 0.8 else -facing, b,
                        _object_rgb(kind, colour, rng), lift) for b, lift in zip(boxes, lifts)]
    others: list[SceneObject] = []
    if rng.random() < 0.45:
        choices = [k for k in sorted(KINDS) if k != kind and background in KINDS[k].backgrounds]
        okind = rng.choice(choices)
        ocolour = rng.choice([c for c in KINDS[okind].colours if c != colour and c not in _CLASHES[background]])
        oaction = _pick_action(okind, background, rng)
        ovariant = _pick_variant(okind, ocolour, rng)
        obox = _place_other(okind, oaction, ovariant, boxes, geo, background, rng)
        if obox is not None:
            others.append(SceneObject(okind, ocolour, oaction, ovariant, rng.choice((1, -1)), obox,
                                      _object_rgb(okind, ocolour, rng)))
    gx0, gy0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    gx1, gy1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    per_object = max((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) / (W * H)
    return Scene(
        image_id=f"demo_{index:05d}", background=background, geometry=geo, main=main, others=others,
        size="large" if per_object >= 0.07 else "small",
        position=_horizontal_label((gx0 + gx1) / 2, W), vertical=_vertical_label((gy0 + gy1) / 2, H),
        area_fraction=sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) / (W * H),
    )


# --------------------------------------------------------------------------- drawing

def _shade(c: RGB, k: float) -> RGB:
    return tuple(int(min(255, max(0, v * k))) for v in c)  # type: ignore[return-value]


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _jitter(c: RGB, rng: random.Random, amount: float = 10) -> RGB:
    return tuple(int(min(255, max(0, v + rng.uniform(-amount, amount)))) for v in c)  # type: ignore[return-value]


class _Pen:
    """Draws shapes given in coordinates relative to an object's box (0..1), mirrored when facing left."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], facing: int, edge: RGB,
                 frame_h: float):
        self.d = draw
        self.frame_h = frame_h
        self.x0, self.y0 = box[0], box[1]
        self.w, self.h = box[2] - box[0], box[3] - box[1]
        self.flip = facing < 0
        self.edge = edge
        self.lw = max(1, int(round(self.h * 0.012)))

    def p(self, u: float, v: float) -> tuple[float, float]:
        return (self.x0 + (1 - u if self.flip else u) * self.w, self.y0 + v * self.h)

    def _box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[float, float, float, float]:
        (ax, ay), (bx, by) = self.p(u0, v0), self.p(u1, v1)
        return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))

    def ellipse(self, u0: float, v0: float, u1: float, v1: float, fill: RGB, edge: bool = True) -> None:
        self.d.ellipse(self._box(u0, v0, u1, v1), fill=fill, outline=self.edge if edge else None,
                       width=self.lw if edge else 0)

    def circle(self, u: float, v: float, r: float, fill: RGB, edge: bool = True) -> None:
        """A round circle of radius ``r`` box heights."""
        x, y = self.p(u, v)
        rr = r * self.h
        self.d.ellipse((x - rr, y - rr, x + rr, y + rr), fill=fill, outline=self.edge if edge else None,
                       width=self.lw if edge else 0)

    def rect(self, u0: float, v0: float, u1: float, v1: float, fill: RGB, edge: bool = True) -> None:
        self.d.rectangle(self._box(u0, v0, u1, v1), fill=fill, outline=self.edge if edge else None,
                         width=self.lw if edge else 0)

    def poly(self, pts: list[tuple[float, float]], fill: RGB, edge: bool = True) -> None:
        self.d.polygon([self.p(u, v) for u, v in pts], fill=fill, outline=self.edge if edge else None,
                       width=self.lw if edge else 0)

    def line(self, pts: list[tuple[float, float]], fill: RGB, width: float) -> None:
        self.d.line([self.p(u, v) for u, v in pts], fill=fill, width=max(1, int(round(width * self.h))),
                    joint="curve")


_BLACK = (20, 20, 22)
_SKIN = ((241, 200, 165), (224, 172, 125), (176, 120, 80), (110, 72, 48))
_HAIR = ((40, 28, 20), (20, 18, 18), (196, 160, 90), (120, 70, 35))


def _legs(pen: _Pen, col: RGB, far: RGB, pairs: list[tuple[float, float, float, float]], width: float) -> None:
    """Legs as thick lines (u_hip, v_hip, u_foot, v_foot); the first half are the far legs."""
    half = len(pairs) // 2
    for i, (u0, v0, u1, v1) in enumerate(pairs):
        pen.line([(u0, v0), (u1, v1)], far if i < half else col, width)


def _draw_dog(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    dark = _shade(c, 0.7) if sum(c) > 120 else _mix(c, (90, 90, 90), 0.4)
    if o.action == "sit":
        pen.line([(0.2, 0.94), (0.02, 0.97)], c, 0.06)
        pen.ellipse(0.1, 0.5, 0.62, 1.0, c)
        pen.poly([(0.28, 0.62), (0.44, 0.24), (0.72, 0.3), (0.72, 0.86), (0.36, 0.96)], c)
        _legs(pen, c, dark, [(0.56, 0.6, 0.56, 0.99), (0.66, 0.6, 0.67, 0.99)], 0.08)
        pen.ellipse(0.5, 0.02, 0.86, 0.34, c)
        pen.ellipse(0.76, 0.13, 1.0, 0.29, c)
        pen.poly([(0.54, 0.06), (0.63, 0.03), (0.6, 0.36), (0.52, 0.28)], dark)
        pen.circle(0.985, 0.19, 0.025, _BLACK, edge=False)
        pen.circle(0.74, 0.13, 0.018, _BLACK, edge=False)
        return
    moving = o.action in ("run", "jump")
    pen.line([(0.17, 0.38), (0.07, 0.22), (0.02, 0.1)], c, 0.06)
    if moving:
        legs = [(0.3, 0.5, 0.1, 0.93), (0.62, 0.5, 0.84, 0.95), (0.24, 0.52, 0.03, 0.86), (0.68, 0.5, 0.92, 0.87)]
    else:
        legs = [(0.27, 0.5, 0.27, 0.98), (0.66, 0.5, 0.66, 0.98), (0.2, 0.5, 0.2, 0.99), (0.6, 0.5, 0.6, 0.99)]
    _legs(pen, c, dark, legs, 0.1)
    pen.ellipse(0.14, 0.28, 0.8, 0.62, c)
    pen.ellipse(0.64, 0.06, 0.92, 0.4, c)
    pen.ellipse(0.84, 0.19, 1.0, 0.35, c)
    pen.poly([(0.66, 0.1), (0.75, 0.06), (0.73, 0.4), (0.64, 0.3)], dark)
    pen.circle(0.985, 0.23, 0.03, _BLACK, edge=False)
    pen.circle(0.82, 0.17, 0.022, _BLACK, edge=False)


def _draw_cat(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    dark = _shade(c, 0.72) if sum(c) > 120 else _mix(c, (90, 90, 90), 0.4)
    eye = (90, 170, 60)
    if o.action == "sit":
        pen.line([(0.7, 0.96), (0.96, 0.92), (0.98, 0.72)], c, 0.06)
        pen.poly([(0.5, 0.3), (0.8, 0.55), (0.86, 0.98), (0.14, 0.98), (0.2, 0.55)], c)
        pen.ellipse(0.3, 0.86, 0.5, 1.0, c)
        pen.poly([(0.22, 0.16), (0.26, -0.02), (0.42, 0.1)], c)
        pen.poly([(0.58, 0.1), (0.74, -0.02), (0.78, 0.16)], c)
        pen.ellipse(0.2, 0.04, 0.8, 0.44, c)
        pen.circle(0.38, 0.22, 0.035, eye, edge=False)
        pen.circle(0.62, 0.22, 0.035, eye, edge=False)
        pen.circle(0.5, 0.3, 0.02, (220, 120, 130), edge=False)
        return
    pen.line([(0.16, 0.45), (0.06, 0.36), (0.03, 0.14), (0.1, 0.03)], c, 0.06)
    if o.action == "walk":
        legs = [(0.3, 0.55, 0.2, 0.98), (0.64, 0.55, 0.74, 0.98), (0.22, 0.55, 0.3, 0.98), (0.7, 0.55, 0.62, 0.98)]
    else:
        legs = [(0.3, 0.55, 0.3, 0.98), (0.7, 0.55, 0.7, 0.98), (0.22, 0.55, 0.22, 0.98), (0.62, 0.55, 0.62, 0.98)]
    _legs(pen, c, dark, legs, 0.07)
    pen.ellipse(0.15, 0.34, 0.78, 0.64, c)
    pen.poly([(0.7, 0.22), (0.72, 0.0), (0.8, 0.16)], c)
    pen.poly([(0.84, 0.14), (0.92, 0.0), (0.95, 0.24)], c)
    pen.ellipse(0.66, 0.1, 0.96, 0.44, c)
    pen.circle(0.84, 0.24, 0.03, eye, edge=False)


def _draw_horse(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    dark = _shade(c, 0.55) if sum(c) > 120 else _mix(c, (90, 90, 90), 0.3)
    mane = _shade(c, 0.45) if sum(c) > 200 else (30, 24, 20) if sum(c) > 90 else (70, 70, 72)
    pen.poly([(0.2, 0.34), (0.12, 0.36), (0.05, 0.72), (0.13, 0.74)], mane)
    if o.action == "run":
        legs = [(0.28, 0.52, 0.1, 0.92), (0.7, 0.5, 0.9, 0.86), (0.24, 0.52, 0.06, 0.98), (0.66, 0.5, 0.84, 0.97)]
    else:
        legs = [(0.3, 0.5, 0.3, 0.99), (0.72, 0.5, 0.72, 0.99), (0.22, 0.5, 0.22, 1.0), (0.64, 0.5, 0.64, 1.0)]
    _legs(pen, c, dark, legs, 0.075)
    pen.ellipse(0.16, 0.28, 0.8, 0.58, c)
    pen.poly([(0.62, 0.38), (0.74, 0.08), (0.87, 0.1), (0.8, 0.46)], c)
    pen.poly([(0.74, 0.06), (0.84, 0.0), (1.0, 0.2), (0.96, 0.28), (0.82, 0.2)], c)
    pen.poly([(0.7, 0.1), (0.75, 0.04), (0.7, 0.38), (0.62, 0.38)], mane, edge=False)
    pen.circle(0.87, 0.1, 0.018, _BLACK, edge=False)


def _draw_bird(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    dark = _shade(c, 0.68) if sum(c) > 120 else _mix(c, (90, 90, 90), 0.4)
    beak = (230, 150, 30) if o.colour not in ("yellow", "orange") else (120, 80, 30)
    if o.action == "fly":
        pen.poly([(0.42, 0.48), (0.58, 0.48), (0.66, 0.02), (0.54, 0.0)], dark)
        pen.poly([(0.24, 0.5), (0.0, 0.38), (0.04, 0.64)], c)
        pen.ellipse(0.22, 0.42, 0.76, 0.64, c)
        pen.circle(0.76, 0.44, 0.11, c)
        pen.poly([(0.84, 0.39), (0.98, 0.46), (0.84, 0.5)], beak)
        pen.poly([(0.36, 0.52), (0.56, 0.52), (0.32, 0.04), (0.22, 0.1)], c)
        pen.circle(0.79, 0.41, 0.025, _BLACK, edge=False)
        return
    _legs(pen, beak, beak, [(0.42, 0.78, 0.4, 1.0), (0.54, 0.78, 0.56, 1.0)], 0.025)
    pen.poly([(0.25, 0.66), (0.04, 0.94), (0.16, 1.0), (0.38, 0.76)], dark)
    pen.ellipse(0.16, 0.3, 0.74, 0.82, c)
    pen.circle(0.64, 0.24, 0.17, c)
    pen.poly([(0.8, 0.19), (1.0, 0.25), (0.8, 0.31)], beak)
    pen.ellipse(0.22, 0.42, 0.6, 0.74, dark)
    pen.circle(0.7, 0.2, 0.03, _BLACK, edge=False)


def _draw_person(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    skin = rng.choice(_SKIN)
    hair = rng.choice(_HAIR)
    trousers = (52, 62, 96) if o.colour not in ("blue", "purple") else (170, 150, 110)
    moving = o.action in ("walk", "run")
    spread = 0.26 if o.action == "run" else 0.16 if moving else 0.0
    if o.variant == "woman":
        pen.ellipse(0.32, 0.0, 0.68, 0.3, hair, edge=False)
        _legs(pen, skin, skin, [(0.42, 0.66, 0.42 - spread, 0.99), (0.58, 0.66, 0.58 + spread, 0.99)], 0.06)
        pen.line([(0.33, 0.22), (0.16 - spread / 2, 0.5)], c, 0.06)
        pen.line([(0.67, 0.22), (0.84 + spread / 2, 0.5)], c, 0.06)
        pen.poly([(0.33, 0.18), (0.67, 0.18), (0.86, 0.72), (0.14, 0.72)], c)
    else:
        _legs(pen, trousers, trousers, [(0.4, 0.54, 0.4 - spread, 0.99), (0.6, 0.54, 0.6 + spread, 0.99)], 0.1)
        pen.line([(0.28, 0.22), (0.12 - spread / 2, 0.52)], c, 0.075)
        pen.line([(0.72, 0.22), (0.88 + spread / 2, 0.52)], c, 0.075)
        pen.rect(0.26, 0.18, 0.74, 0.58, c)
    pen.circle(0.5, 0.1, 0.085, skin)
    pen.ellipse(0.36, 0.0, 0.64, 0.08, hair, edge=False)


def _draw_ball(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    seam = _shade(c, 0.6) if o.colour != "white" else (60, 60, 60)
    pen.ellipse(0.0, 0.0, 1.0, 1.0, c)
    x0, y0, x1, y1 = pen._box(0.0, 0.0, 1.0, 1.0)
    top, bottom = y0 + 0.1 * pen.h, y1 - 0.1 * pen.h
    pen.d.arc((x0 - 0.5 * pen.w, top, x0 + 0.55 * pen.w, bottom), -60, 60, fill=seam, width=pen.lw)
    pen.d.arc((x0 + 0.45 * pen.w, top, x1 + 0.5 * pen.w, bottom), 120, 240, fill=seam, width=pen.lw)
    pen.ellipse(0.22, 0.14, 0.42, 0.3, _mix(c, (255, 255, 255), 0.55), edge=False)


def _draw_car(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    glass = (150, 182, 205)
    if o.action == "drive":
        for v in (0.3, 0.52, 0.7):
            pen.line([(-0.32, v), (-0.06, v)], (235, 235, 235), 0.03)
    pen.poly([(0.18, 0.46), (0.3, 0.1), (0.7, 0.1), (0.84, 0.46)], c)
    pen.d.rounded_rectangle(pen._box(0.0, 0.42, 1.0, 0.84), radius=0.12 * pen.h, fill=c, outline=pen.edge,
                            width=pen.lw)
    pen.poly([(0.24, 0.42), (0.33, 0.15), (0.48, 0.15), (0.48, 0.42)], glass)
    pen.poly([(0.52, 0.42), (0.52, 0.15), (0.67, 0.15), (0.78, 0.42)], glass)
    pen.rect(0.94, 0.5, 1.0, 0.6, (250, 240, 190))
    pen.rect(0.0, 0.5, 0.03, 0.6, (200, 30, 30))
    for u in (0.22, 0.78):
        pen.circle(u, 0.82, 0.17, _BLACK)
        pen.circle(u, 0.82, 0.07, (150, 150, 150), edge=False)


def _draw_boat(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    sail = (246, 246, 240) if o.colour != "white" else (225, 225, 215)
    pen.line([(0.5, 0.04), (0.5, 0.72)], (70, 50, 35), 0.022)
    pen.poly([(0.53, 0.05), (0.53, 0.66), (0.94, 0.66)], c)
    pen.poly([(0.47, 0.14), (0.47, 0.66), (0.12, 0.66)], sail)
    pen.poly([(0.0, 0.7), (1.0, 0.7), (0.86, 0.95), (0.1, 0.95)], c)
    pen.line([(0.04, 0.75), (0.96, 0.75)], _mix(c, (255, 255, 255), 0.6), 0.03)


def _draw_tree(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    trunk = (96, 64, 38)
    if o.variant == "pine":
        pen.rect(0.43, 0.8, 0.57, 1.0, trunk)
        pen.poly([(0.5, 0.36), (1.0, 0.84), (0.0, 0.84)], _shade(c, 0.9))
        pen.poly([(0.5, 0.17), (0.9, 0.6), (0.1, 0.6)], c)
        pen.poly([(0.5, 0.0), (0.8, 0.36), (0.2, 0.36)], _shade(c, 1.08))
        return
    pen.poly([(0.43, 1.0), (0.57, 1.0), (0.54, 0.5), (0.46, 0.5)], trunk)
    for u, v, r, k in ((0.28, 0.42, 0.2, 0.9), (0.72, 0.42, 0.2, 0.92), (0.5, 0.3, 0.27, 1.0),
                       (0.36, 0.2, 0.17, 1.06), (0.64, 0.22, 0.17, 1.04)):
        pen.circle(u, v, r * rng.uniform(0.92, 1.05), _shade(c, k))


def _draw_house(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    roof = (72, 72, 78) if o.colour in ("red", "pink", "brown", "orange") else (120, 48, 38)
    pen.rect(0.68, 0.06, 0.8, 0.3, (110, 90, 80))
    pen.rect(0.08, 0.42, 0.92, 1.0, c)
    pen.poly([(0.0, 0.44), (0.5, 0.0), (1.0, 0.44)], roof)
    pen.rect(0.42, 0.66, 0.58, 1.0, (90, 58, 36))
    for u in (0.16, 0.66):
        pen.rect(u, 0.54, u + 0.18, 0.76, (170, 200, 225))
        pen.line([(u + 0.09, 0.54), (u + 0.09, 0.76)], (245, 245, 245), 0.015)
        pen.line([(u, 0.65), (u + 0.18, 0.65)], (245, 245, 245), 0.015)


def _draw_kite(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    bow = (250, 250, 250) if o.colour not in ("white", "yellow") else (220, 40, 40)
    ground_v = (pen.frame_h - pen.y0) / pen.h
    pen.line([(0.5, 0.26), (-0.9, ground_v)], (235, 235, 235), 0.006)
    tail = [(0.5, 0.62), (0.44, 0.72), (0.54, 0.82), (0.46, 0.92), (0.52, 1.0)]
    pen.line(tail, (60, 60, 60), 0.01)
    for u, v in tail[1:]:
        pen.poly([(u - 0.08, v - 0.03), (u + 0.08, v + 0.03), (u + 0.08, v - 0.03), (u - 0.08, v + 0.03)], bow,
                 edge=False)
    pen.poly([(0.5, 0.0), (0.98, 0.24), (0.5, 0.64), (0.02, 0.24)], c)
    pen.poly([(0.5, 0.0), (0.98, 0.24), (0.5, 0.24)], _shade(c, 0.82), edge=False)
    pen.line([(0.5, 0.0), (0.5, 0.64)], _shade(c, 0.5), 0.012)
    pen.line([(0.02, 0.24), (0.98, 0.24)], _shade(c, 0.5), 0.012)


def _draw_flower(pen: _Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    stem = (50, 120, 45)
    pen.line([(0.5, 0.38), (0.52, 1.0)], stem, 0.045)
    pen.poly([(0.51, 0.78), (0.9, 0.6), (0.7, 0.78)], stem)
    pen.poly([(0.51, 0.88), (0.1, 0.7), (0.3, 0.9)], stem)
    cx, cy = pen.p(0.5, 0.24)
    R = 0.22 * pen.h
    n = rng.choice((5, 6, 8))
    for k in range(n):
        a = 2 * math.pi * k / n
        px, py = cx + 0.62 * R * math.cos(a), cy + 0.62 * R * math.sin(a)
        r = 0.42 * R
        pen.d.ellipse((px - r, py - r, px + r, py + r), fill=c, outline=_shade(c, 0.7), width=pen.lw)
    centre = (110, 70, 30) if o.colour in ("yellow", "orange") else (245, 200, 40)
    r = 0.34 * R
    pen.d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=centre)


_DRAW: dict[str, Callable[[_Pen, RGB, SceneObject, random.Random], None]] = {
    "dog": _draw_dog, "cat": _draw_cat, "horse": _draw_horse, "bird": _draw_bird, "person": _draw_person,
    "ball": _draw_ball, "car": _draw_car, "boat": _draw_boat, "tree": _draw_tree, "house": _draw_house,
    "kite": _draw_kite, "flower": _draw_flower,
}


def _vertical_gradient(h: int, stops: list[tuple[float, RGB]]) -> np.ndarray:
    """An (h, 1, 3) float column that blends between colour stops given at height fractions."""
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)
    pos = np.array([p for p, _ in stops], dtype=np.float32)
    cols = np.array([c for _, c in stops], dtype=np.float32)
    return np.stack([np.interp(ys, pos, cols[:, k]) for k in range(3)], axis=1).astype(np.float32)[:, None, :]


def _mottle(rng: np.random.Generator, h: int, w: int, cell: int, amount: float) -> np.ndarray:
    """Smooth low-frequency brightness noise, (h, w, 1)."""
    small = rng.standard_normal((max(2, h // cell), max(2, w // cell))).astype(np.float32)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    return (np.asarray(img, dtype=np.float32) * amount)[:, :, None]


def _background(scene: Scene, rng: random.Random, nrng: np.random.Generator, W: int, H: int) -> Image.Image:
    """The backdrop of a scene at drawing size (W, H): palette, gradient, texture."""
    bg, geo = scene.background, scene.geometry
    hz = geo["horizon"]
    J = lambda c, a=10: _jitter(c, rng, a)  # noqa: E731
    sky_hi, sky_lo = J((98, 152, 222), 14), J((188, 212, 238), 10)
    if bg == "grass":
        stops = [(0, sky_hi), (hz, sky_lo), (hz + 0.001, J((112, 170, 66), 14)), (1, J((62, 128, 40), 12))]
    elif bg == "snow":
        stops = [(0, J((190, 200, 216))), (hz, J((222, 228, 236), 6)), (hz + 0.001, J((246, 248, 252), 4)),
                 (1, J((222, 230, 242), 6))]
    elif bg == "beach":
        sand = geo["sand"]
        stops = [(0, sky_hi), (hz, sky_lo), (hz + 0.001, J((34, 104, 166))), (sand, J((70, 150, 190))),
                 (sand + 0.001, J((232, 212, 168), 8)), (1, J((212, 186, 136), 8))]
    elif bg == "street":
        road = hz + 0.06
        stops = [(0, J((150, 176, 206))), (hz, J((200, 208, 218))), (hz + 0.001, J((176, 174, 168), 6)),
                 (road, J((176, 174, 168), 6)), (road + 0.001, J((92, 92, 96), 6)), (1, J((68, 68, 72), 6))]
    elif bg == "night":
        stops = [(0, J((8, 12, 34), 5)), (hz, J((30, 36, 78), 8)), (hz + 0.001, J((16, 24, 28), 4)),
                 (1, J((10, 14, 18), 3))]
    elif bg == "lake":
        shore = geo["shore"]
        ground = J((120, 156, 78), 10) if rng.random() < 0.5 else J((204, 188, 140), 8)
        stops = [(0, sky_hi), (hz, sky_lo), (hz + 0.001, J((60, 124, 178))), (shore, J((42, 96, 160))),
                 (shore + 0.001, ground), (1, _shade(ground, 0.85))]
    elif bg == "forest":
        stops = [(0, J((150, 184, 160))), (0.3, J((52, 96, 52))), (hz, J((36, 72, 36))),
                 (hz + 0.001, J((96, 78, 48))), (1, J((70, 60, 36)))]
    else:  # indoor
        wall = J(rng.choice(((228, 212, 182), (236, 224, 200), (214, 200, 186), (226, 214, 172))), 6)
        stops = [(0, _shade(wall, 0.92)), (hz, wall), (hz + 0.001, J((158, 106, 64), 8)), (1, J((120, 80, 46), 8))]
    mottle = 5.0 if bg in ("snow", "night") else 9.0
    arr = _vertical_gradient(H // _SS, stops) + _mottle(nrng, H // _SS, W // _SS, 12, mottle)
    # Nearest is enough: the final 2x reduction gives back the smooth base exactly.
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).resize((W, H), Image.Resampling.NEAREST)
    d = ImageDraw.Draw(img, "RGBA")
    _TEXTURES[bg](d, rng, W, H, geo)
    return img


def _clouds(d: ImageDraw.ImageDraw, rng: random.Random, W: int, H: int, top: float) -> None:
    for _ in range(rng.randint(0, 3)):
        x, y = rng.uniform(0, W), rng.uniform(0.04, max(0.05, top - 0.08)) * H
        for _ in range(4):
            rx, ry = rng.uniform(0.04, 0.08) * W, rng.uniform(0.03, 0.05) * H
            dx, dy = rng.uniform(-0.06, 0.06) * W, rng.uniform(-0.02, 0.02) * H
            d.ellipse((x + dx - rx, y + dy - ry, x + dx + rx, y + dy + ry), fill=(255, 255, 255, 150))


def _tex_grass(d, rng, W, H, geo):
    _clouds(d, rng, W, H, geo["horizon"])
    y0 = geo["horizon"] * H
    for _ in range(260):
        x, y = rng.uniform(0, W), rng.uniform(y0, H)
        depth = (y - y0) / (H - y0)
        ln = (3 + 12 * depth) * rng.uniform(0.7, 1.3)
        g = rng.choice(((40, 100, 30, 150), (140, 200, 90, 130), (70, 140, 40, 150)))
        d.line((x, y, x + rng.uniform(-0.4, 0.4) * ln, y - ln), fill=g, width=2)


def _tex_snow(d, rng, W, H, geo):
    y0 = geo["horizon"] * H
    for _ in range(2):
        cx, r = rng.uniform(0, W), rng.uniform(0.4, 0.7) * W
        d.ellipse((cx - r, y0 - 0.1 * H, cx + r, y0 + 0.25 * H), fill=(215, 224, 238, 110))
    for _ in range(140):
        x, y = rng.uniform(0, W), rng.uniform(y0, H)
        r = rng.uniform(1, 3.5)
        d.ellipse((x - r, y - r * 0.5, x + r, y + r * 0.5), fill=(180, 195, 220, 110))
    if rng.random() < 0.5:
        for _ in range(90):
            x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(1, 2.5)
            d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255, 200))


def _tex_beach(d, rng, W, H, geo):
    _clouds(d, rng, W, H, geo["horizon"])
    sea0, sand = geo["horizon"] * H, geo["sand"] * H
    for _ in range(40):
        x, y = rng.uniform(0, W), rng.uniform(sea0, sand)
        d.line((x, y, x + rng.uniform(8, 30), y), fill=(220, 235, 245, 120), width=2)
    pts = [(x, sand + 4 * math.sin(x / W * 12 + rng.uniform(0, 0.1))) for x in range(0, W + 16, 16)]
    d.line(pts, fill=(250, 250, 250, 220), width=5)
    for _ in range(180):
        x, y, r = rng.uniform(0, W), rng.uniform(sand, H), rng.uniform(0.8, 2.0)
        d.ellipse((x - r, y - r, x + r, y + r), fill=rng.choice(((170, 140, 100, 120), (250, 240, 215, 120))))


def _tex_street(d, rng, W, H, geo):
    hz = geo["horizon"] * H
    x = -rng.uniform(0, 30)
    while x < W:
        bw, bh = rng.uniform(0.1, 0.22) * W, rng.uniform(0.12, 0.3) * H
        col = _jitter(rng.choice(((150, 80, 60), (170, 170, 175), (200, 190, 165), (120, 120, 130))), rng, 12)
        d.rectangle((x, hz - bh, x + bw, hz), fill=col)
        for wy in np.arange(hz - bh + 6, hz - 10, 14):
            for wx in np.arange(x + 5, x + bw - 8, 12):
                d.rectangle((wx, wy, wx + 6, wy + 7), fill=(60, 70, 90, 200))
        x += bw + rng.uniform(0, 10)
    road = (geo["horizon"] + 0.06) * H
    d.line((0, road, W, road), fill=(220, 220, 215), width=4)
    mid = road + (H - road) * rng.uniform(0.35, 0.55)
    paint = (240, 240, 240) if rng.random() < 0.5 else (236, 200, 60)
    x = rng.uniform(-40, 0)
    while x < W:
        d.rectangle((x, mid - 3, x + 40, mid + 3), fill=paint)
        x += 80
    for _ in range(200):
        x, y, r = rng.uniform(0, W), rng.uniform(road, H), rng.uniform(0.8, 1.8)
        d.ellipse((x - r, y - r, x + r, y + r), fill=rng.choice(((40, 40, 44, 120), (140, 140, 140, 100))))


def _tex_night(d, rng, W, H, geo):
    hz = geo["horizon"] * H
    for _ in range(110):
        x, y, r = rng.uniform(0, W), rng.uniform(0, hz), rng.uniform(0.6, 2.0)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, rng.randint(200, 255), rng.randint(140, 255)))
    mx, my, mr = rng.uniform(0.1, 0.9) * W, rng.uniform(0.08, 0.22) * H, rng.uniform(0.04, 0.06) * H
    d.ellipse((mx - mr * 1.6, my - mr * 1.6, mx + mr * 1.6, my + mr * 1.6), fill=(200, 200, 170, 40))
    d.ellipse((mx - mr, my - mr, mx + mr, my + mr), fill=(236, 234, 206))
    pts = [(0, H)] + [(x, hz + rng.uniform(-0.05, 0.03) * H) for x in np.linspace(0, W, 7)] + [(W, H)]
    d.polygon(pts, fill=(14, 22, 26, 220))


def _tex_lake(d, rng, W, H, geo):
    _clouds(d, rng, W, H, geo["horizon"])
    hz, shore = geo["horizon"] * H, geo["shore"] * H
    pts = [(0, hz)] + [(x, hz - rng.uniform(0.02, 0.07) * H) for x in np.linspace(0, W, 24)] + [(W, hz)]
    d.polygon(pts, fill=_jitter((46, 92, 52), rng, 8))
    for _ in range(70):
        x, y = rng.uniform(0, W), rng.uniform(hz + 4, shore)
        ln = rng.uniform(6, 20) * (0.5 + (y - hz) / (shore - hz))
        d.line((x, y, x + ln, y), fill=(200, 225, 245, 110), width=2)
    d.line((0, shore, W, shore), fill=(235, 240, 245, 160), width=3)


def _tex_forest(d, rng, W, H, geo):
    hz = geo["horizon"] * H
    for _ in range(rng.randint(8, 13)):
        x, w = rng.uniform(0, W), rng.uniform(0.02, 0.06) * W
        d.rectangle((x, 0.15 * H, x + w, hz + rng.uniform(0, 0.04) * H), fill=_jitter((72, 52, 34), rng, 12))
    for _ in range(28):
        x, y, r = rng.uniform(0, W), rng.uniform(-0.05, 0.3) * H, rng.uniform(0.08, 0.16) * W
        d.ellipse((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=_jitter((38, 88, 40), rng, 14) + (220,))
    for _ in range(200):
        x, y, r = rng.uniform(0, W), rng.uniform(hz, H), rng.uniform(1, 3)
        d.ellipse((x - r, y - r * 0.6, x + r, y + r * 0.6),
                  fill=rng.choice(((150, 90, 30, 150), (60, 100, 40, 150), (50, 40, 25, 150))))


def _tex_indoor(d, rng, W, H, geo):
    floor = geo["horizon"] * H
    wx0, wy0 = rng.uniform(0.08, 0.6) * W, rng.uniform(0.08, 0.16) * H
    ww, wh = rng.uniform(0.2, 0.3) * W, (floor - wy0) * rng.uniform(0.5, 0.7)
    d.rectangle((wx0, wy0, wx0 + ww, wy0 + wh), fill=(178, 206, 232), outline=(250, 250, 250), width=6)
    d.line((wx0 + ww / 2, wy0, wx0 + ww / 2, wy0 + wh), fill=(250, 250, 250), width=5)
    d.line((wx0, wy0 + wh / 2, wx0 + ww, wy0 + wh / 2), fill=(250, 250, 250), width=5)
    d.rectangle((0, floor - 8, W, floor), fill=(245, 242, 235))
    y = floor
    while y < H:
        step = 14 + (y - floor) * 0.25
        d.line((0, y, W, y), fill=(90, 58, 32, 160), width=2)
        off = rng.uniform(0, 120)
        for x in np.arange(off, W, 120):
            d.line((x, y, x, y + step), fill=(90, 58, 32, 110), width=2)
        y += step


_TEXTURES = {"grass": _tex_grass, "snow": _tex_snow, "beach": _tex_beach, "street": _tex_street,
             "night": _tex_night, "lake": _tex_lake, "forest": _tex_forest, "indoor": _tex_indoor}


def render_scene(scene: Scene, seed: int) -> Image.Image:
    """The photo of a scene: backdrop, objects (far ones first) and mild lighting and sensor noise."""
    W, H = int(scene.geometry["width"]), int(scene.geometry["height"])
    idx = int(scene.image_id.split("_")[1])
    rng = random.Random(f"capsearch-demo-render:{seed}:{idx}")
    nrng = np.random.default_rng([seed, idx, 1])
    img = _background(scene, rng, nrng, W * _SS, H * _SS)
    d = ImageDraw.Draw(img, "RGBA")
    objects = sorted(scene.main + scene.others, key=lambda o: (o.box[3], o.box[0]))
    for o in objects:
        box = tuple(v * _SS for v in o.box)
        grounded = o.action not in _FLYING and o.action != "sail"
        if grounded:
            w = box[2] - box[0]
            base = box[3] + o.lift * _SS
            d.ellipse((box[0] + 0.04 * w, base - 0.02 * w, box[2] - 0.04 * w, base + 0.03 * w), fill=(0, 0, 0, 70))
        edge = _shade(o.rgb, 0.55) if sum(o.rgb) > 150 else (70, 70, 74)
        _DRAW[o.kind](_Pen(d, box, o.facing, edge, H * _SS), o.rgb, o, rng)  # type: ignore[arg-type]
        if o.action == "sail":
            y = box[3] - 0.05 * (box[3] - box[1])
            d.line((box[0] - 6, y, box[2] + 6, y), fill=(220, 235, 245, 170), width=3)
    img = img.reduce(_SS)
    arr = np.array(img, dtype=np.float32)
    light = rng.uniform(0.93, 1.07)
    angle = rng.uniform(0, 2 * math.pi)
    xs = np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None]
    grad = light * (1 + 0.14 * (math.cos(angle) * xs + math.sin(angle) * ys))
    tint = np.array([rng.uniform(0.96, 1.04), 1.0, rng.uniform(0.96, 1.04)], dtype=np.float32)
    arr *= grad[:, :, None] * tint
    noise = rng.randint(3, 7)
    arr += nrng.integers(-noise, noise + 1, (H, W, 3), dtype=np.int8)
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8))


# --------------------------------------------------------------------------- captions

def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class _Phrases:
    """Truthful wordings of one scene; every call may pick other synonyms."""

    def __init__(self, scene: Scene, rng: random.Random):
        self.s = scene
        self.rng = rng
        self.plain = False    # plain names only (the first caption of each image)

    def _pick(self, options, weights=None):
        if self.plain:
            return options[0]
        return self.rng.choices(options, weights=weights)[0] if weights else self.rng.choice(options)

    # nouns and colours -----------------------------------------------------
    def noun(self, n: int | None = None) -> str:
        n = self.s.count if n is None else n
        nouns = _PERSON_NOUNS[self.s.variant] if self.s.kind == "person" else KINDS[self.s.kind].nouns
        if self.s.kind == "tree" and self.s.variant == "pine" and not self.plain and self.rng.random() < 0.5:
            nouns = (("pine tree", "pine trees"), ("fir tree", "fir trees"))
        weights = [6] + [2] * (len(nouns) - 1)
        sg, pl = self._pick(nouns, weights)
        return sg if n == 1 else pl

    def colour_word(self) -> str:
        words = COLOUR_WORDS[self.s.colour]
        if self.s.colour == "yellow" and self.s.kind not in ("dog", "horse"):
            words = ("yellow",)
        return self._pick(words, [4] + [1] * (len(words) - 1))

    def counted(self, det: str) -> str:
        """The determiner and count: 'a', 'the two', 'three', ... ('num': numbers only)."""
        n = self.s.count
        if det == "num":
            return "a" if n == 1 else _COUNTS[n][0]
        if det == "def":
            return "the" if n == 1 else f"the {_COUNTS[n][0]}"
        if det == "bare":
            return "" if n == 1 else _COUNTS[n][0]
        if n == 1:
            return "one" if (not self.plain and self.rng.random() < 0.06) else "a"
        return self._pick(_COUNTS[n])

    def np(self, det: str = "indef", size: bool = False) -> str:
        """The subject, e.g. 'two brown dogs', 'a man in a red shirt', 'a car painted blue'."""
        s, n = self.s, self.s.count
        colour = self.colour_word()
        sz = self._pick(_SIZE_WORDS[s.size]) + " " if size and s.kind != "person" else ""
        if s.kind == "person":
            garment = _PERSON_GARMENT[s.variant][0 if n == 1 else 1]
            mod = self._pick((f"in {_a(colour)} {colour} {garment}" if n == 1 else f"in {colour} {garment}",
                              f"wearing {colour}", f"dressed in {colour}", f"in {colour}"), [4, 2, 1, 1])
            head = f"{sz}{self.noun()} {mod}"
        else:
            style = "pre"
            spec = KINDS[s.kind]
            if not self.plain and self.rng.random() < 0.3 and (spec.colour_nouns or s.kind in _PAINTED):
                style = "post"
            if style == "post" and spec.colour_nouns == "coat":
                coat = f"{_a(colour)} {colour} coat" if n == 1 else f"{colour} coats"
                head = f"{sz}{self.noun()} with {coat}"
            elif style == "post" and spec.colour_nouns:
                head = f"{sz}{self.noun()} with {colour} {spec.colour_nouns}"
            elif style == "post":
                head = f"{sz}{self.noun()} painted {colour}"
            else:
                head = f"{sz}{colour} {self.noun()}"
        lead = self.counted(det)
        if lead == "a":
            lead = _a(head)
        return f"{lead} {head}".strip()

    def predicate_colour(self) -> str:
        """'is brown' style: 'brown', 'wearing a red shirt'."""
        s = self.s
        colour = self.colour_word()
        if s.kind == "person":
            garment = _PERSON_GARMENT[s.variant][0 if s.count == 1 else 1]
            worn = f"{_a(colour)} {colour} {garment}" if s.count == 1 else f"{colour} {garment}"
            return self._pick((f"wearing {worn}", f"dressed in {colour}"))
        if s.kind == "tree":
            return self._pick((colour, f"covered in {colour} leaves"))
        return colour

    # verbs and places ------------------------------------------------------
    def verb(self, form: str) -> str:
        s = self.s
        options = _KIND_VERBS.get((s.kind, s.action), _VERBS[s.action])
        sg, pl, ing = self._pick(options)
        return ing if form == "ing" else sg if s.count == 1 else pl

    def be(self) -> str:
        return "is" if self.s.count == 1 else "are"

    def place(self, static: bool = False, scene_wide: bool = False) -> str:
        """Where the subject is; ``scene_wide`` names the background alone (for two subjects)."""
        s = self.s
        if scene_wide:
            return self._pick(_PLACES[s.background]["static"])
        if s.kind == "boat":
            return self._pick(_BOAT_PLACES[s.background])
        table = _PLACES[s.background]
        if s.action in _FLYING:
            return self._pick(table["sky"])
        if s.action in _MOVING and not static and (self.plain or self.rng.random() < 0.7):
            return self._pick(table["moving"])
        return self._pick(table["static"])

    def lead(self) -> str:
        return self._pick(_PLACES[self.s.background]["lead"])

    def where(self) -> str:
        s = self.s
        h = {"centre": "middle"}.get(s.position, s.position)
        if s.vertical in _CORNERS and s.position != "centre" and self.rng.random() < 0.4:
            return self._pick(_CORNERS[s.vertical]).format(h=h)
        return self._pick(_POSITIONS[s.position])

    def other(self) -> str:
        o = self.s.others[0]
        nouns = _PERSON_NOUNS[o.variant] if o.kind == "person" else KINDS[o.kind].nouns
        noun = self._pick(nouns, [6] + [2] * (len(nouns) - 1))[0]
        if o.kind == "person":
            return f"{_a(noun)} {noun} in {o.colour}"
        return f"{_a(o.colour)} {o.colour} {noun}"


def _t_basic(p: _Phrases) -> str:
    return f"{_cap(p.np())} {p.verb('s')} {p.place()} ."


def _t_position(p: _Phrases) -> str:
    return f"{_cap(p.np())} {p.verb('s')} {p.place()} {p.where()} ."


def _t_short(p: _Phrases) -> str:
    return f"{_cap(p.np('bare'))} {p.place(static=True)} ."


def _t_fragment(p: _Phrases) -> str:
    return f"{_cap(p.np())} {p.verb('ing')} {p.place()} ."


def _t_there(p: _Phrases) -> str:
    return f"There {p.be()} {p.np('num')} {p.place(static=True)} ."


def _t_lead(p: _Phrases) -> str:
    return f"{p.lead()} , {p.np()} {p.verb('s')} ."


def _t_the(p: _Phrases) -> str:
    return f"{_cap(p.counted('def'))} {p.noun()} {p.be()} {p.predicate_colour()} and {p.verb('ing')} {p.place()} ."


def _t_size(p: _Phrases) -> str:
    return f"{_cap(p.np(size=True))} {p.verb('ing')} {p.place()} ."


def _t_photo(p: _Phrases) -> str:
    return f"{p._pick(_PHOTO_OF)} {p.np()} {p.place(static=True)} ."


def _t_long(p: _Phrases) -> str:
    text = f"{_cap(p.np(size=p.rng.random() < 0.5))} {p.verb('s')} {p.place()} , {p.where()}"
    if p.s.others:
        text += f" , {p.rng.choice(('next to', 'not far from', 'near'))} {p.other()}"
    return text + " ."


def _t_with_other(p: _Phrases) -> str:
    if p.rng.random() < 0.5:
        return f"{_cap(p.np())} and {p.other()} {p.place(scene_wide=True)} ."
    return f"{_cap(p.np())} {p.verb('s')} {p.place()} near {p.other()} ."


def _t_closeup(p: _Phrases) -> str:
    return f"{p._pick(('Close-up of', 'A close view of', 'A close-up photo of'))} {p.np()} {p.place(static=True)} ."


def _t_far(p: _Phrases) -> str:
    return f"{_cap(p.np(size=True))} {p.rng.choice(('far away', 'in the distance'))} {p.place(static=True)} ."


_TEMPLATES: dict[str, Callable[[_Phrases], str]] = {
    "basic": _t_basic, "position": _t_position, "short": _t_short, "fragment": _t_fragment, "there": _t_there,
    "lead": _t_lead, "the": _t_the, "size": _t_size, "photo": _t_photo, "long": _t_long,
    "with_other": _t_with_other, "closeup": _t_closeup, "far": _t_far,
}


def _templates_for(scene: Scene) -> list[str]:
    names = ["position", "short", "fragment", "there", "lead", "the", "photo", "long"]
    if scene.kind != "person":
        names.append("size")   # "a small man" reads oddly
    if scene.others:
        names.append("with_other")
    if scene.size == "large" and scene.count == 1:
        names.append("closeup")
    if scene.size == "small":
        names.append("far")
    return names


def write_captions(scene: Scene, seed: int, taken: set[str]) -> list[str]:
    """Five differently worded captions of a scene, none of them in ``taken`` (which is updated)."""
    rng = random.Random(f"capsearch-demo-captions:{seed}:{scene.image_id}")
    p = _Phrases(scene, rng)
    captions: list[str] = []
    p.plain = True
    first = _t_basic(p)
    p.plain = False
    pool = _templates_for(scene)
    rng.shuffle(pool)
    order = ["basic"] + pool + ["basic", "fragment", "long", "position"] * 50
    for i, name in enumerate(order):
        if len(captions) == CAPTIONS_PER_IMAGE:
            break
        for _ in range(12):
            text = first if i == 0 else _TEMPLATES[name](p)
            if text.lower() not in taken:
                taken.add(text.lower())
                captions.append(text)
                break
            if i == 0:
                break
    if len(captions) < CAPTIONS_PER_IMAGE:
        raise RuntimeError(f"could not word {CAPTIONS_PER_IMAGE} unique captions for {scene.image_id}")
    return captions


# --------------------------------------------------------------------------- the world

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
