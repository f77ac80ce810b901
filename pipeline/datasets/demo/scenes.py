"""Sampling the attributes of each demo image: kind, colour, background, count, action, size and position."""
from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.datasets.demo.layout import place_group, place_other, sample_geometry
from pipeline.datasets.demo.vocabulary import CLASHES, COLOURS, KIND_COLOUR_RGB, KINDS, RGB

_JUMP_LIFT = 0.22   # a jumping dog is lifted by this much of its height above its shadow


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
    base = KIND_COLOUR_RGB.get((kind, colour), COLOURS[colour])
    k = rng.uniform(0.95, 1.06)
    return tuple(int(min(255, max(0, c * k + rng.uniform(-6, 6)))) for c in base)  # type: ignore[return-value]


def sample_scene(seed: int, index: int, size: tuple[int, int] = (320, 240)) -> Scene:
    """The scene of image ``index`` (1-based) for ``seed``: depends on nothing else."""
    rng = random.Random(f"capsearch-demo-scene:{seed}:{index}")
    W, H = size
    kind = rng.choice(sorted(KINDS))
    spec = KINDS[kind]
    background = rng.choice(spec.backgrounds)
    colour = rng.choice([c for c in spec.colours if c not in CLASHES[background]])
    action = _pick_action(kind, background, rng)
    variant = _pick_variant(kind, colour, rng)
    count = rng.choices((1, 2, 3), weights=(55, 30, 15))[0]
    large = rng.random() < 0.55
    geo = sample_geometry(background, rng, W, H)
    area = rng.uniform(0.24, 0.42) if large else rng.uniform(0.025, 0.055) * (1 + 0.25 * (count - 1))
    where = rng.choice(("left", "centre", "right"))
    facing = rng.choice((1, -1))
    objs = [(kind, action, variant) for _ in range(count)]
    boxes = place_group(objs, area, where, geo, background, rng)
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
        ocolour = rng.choice([c for c in KINDS[okind].colours if c != colour and c not in CLASHES[background]])
        oaction = _pick_action(okind, background, rng)
        ovariant = _pick_variant(okind, ocolour, rng)
        obox = place_other(okind, oaction, ovariant, boxes, geo, background, rng)
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
