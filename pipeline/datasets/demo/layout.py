"""Where objects go in a demo scene: the frame's horizon and shore lines and the boxes of each object group."""
from __future__ import annotations

import math
import random

from pipeline.datasets.demo.vocabulary import FLYING


def _aspect(kind: str, action: str, variant: str) -> float:
    """Width over height of an object's box."""
    return {
        "dog": 0.9 if action == "sit" else 1.45, "cat": 0.72 if action == "sit" else 1.3, "horse": 1.2,
        "bird": 1.6 if action == "fly" else 0.8, "person": 0.56 if action == "run" else 0.44, "ball": 1.0,
        "car": 2.1, "boat": 1.0, "tree": 0.62 if variant == "pine" else 0.82, "house": 1.1, "kite": 0.62,
        "flower": 0.56,
    }[kind]


def sample_geometry(background: str, rng: random.Random, width: int, height: int) -> dict[str, float]:
    """The frame's size and its horizon (and shore or sand line) as fractions of the height."""
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


def place_group(objs: list[tuple[str, str, str]], area: float, where: str, geo: dict[str, float],
                background: str, rng: random.Random) -> list[tuple[float, float, float, float]]:
    """Boxes for objects of one group side by side, about ``area`` (fraction of the frame) in all."""
    W, H = geo["width"], geo["height"]
    kind, action = objs[0][0], objs[0][1]
    flying = action in FLYING
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


def place_other(kind: str, action: str, variant: str, main_boxes: list, geo: dict[str, float], background: str,
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
    if action in FLYING:
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
