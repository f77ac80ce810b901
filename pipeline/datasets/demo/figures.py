"""How each kind of object is drawn, facing right in its box (the pen mirrors it when it faces left)."""
from __future__ import annotations

import math
import random
from typing import Callable

from pipeline.datasets.demo.pen import Pen, mix, shade
from pipeline.datasets.demo.scenes import SceneObject
from pipeline.datasets.demo.vocabulary import RGB

_BLACK = (20, 20, 22)
_SKIN = ((241, 200, 165), (224, 172, 125), (176, 120, 80), (110, 72, 48))
_HAIR = ((40, 28, 20), (20, 18, 18), (196, 160, 90), (120, 70, 35))


def _legs(pen: Pen, col: RGB, far: RGB, pairs: list[tuple[float, float, float, float]], width: float) -> None:
    """Legs as thick lines (u_hip, v_hip, u_foot, v_foot); the first half are the far legs."""
    half = len(pairs) // 2
    for i, (u0, v0, u1, v1) in enumerate(pairs):
        pen.line([(u0, v0), (u1, v1)], far if i < half else col, width)


def _draw_dog(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    dark = shade(c, 0.7) if sum(c) > 120 else mix(c, (90, 90, 90), 0.4)
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


def _draw_cat(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    dark = shade(c, 0.72) if sum(c) > 120 else mix(c, (90, 90, 90), 0.4)
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


def _draw_horse(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    dark = shade(c, 0.55) if sum(c) > 120 else mix(c, (90, 90, 90), 0.3)
    mane = shade(c, 0.45) if sum(c) > 200 else (30, 24, 20) if sum(c) > 90 else (70, 70, 72)
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


def _draw_bird(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    dark = shade(c, 0.68) if sum(c) > 120 else mix(c, (90, 90, 90), 0.4)
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


def _draw_person(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
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


def _draw_ball(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    seam = shade(c, 0.6) if o.colour != "white" else (60, 60, 60)
    pen.ellipse(0.0, 0.0, 1.0, 1.0, c)
    x0, y0, x1, y1 = pen._box(0.0, 0.0, 1.0, 1.0)
    top, bottom = y0 + 0.1 * pen.h, y1 - 0.1 * pen.h
    pen.d.arc((x0 - 0.5 * pen.w, top, x0 + 0.55 * pen.w, bottom), -60, 60, fill=seam, width=pen.lw)
    pen.d.arc((x0 + 0.45 * pen.w, top, x1 + 0.5 * pen.w, bottom), 120, 240, fill=seam, width=pen.lw)
    pen.ellipse(0.22, 0.14, 0.42, 0.3, mix(c, (255, 255, 255), 0.55), edge=False)


def _draw_car(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
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


def _draw_boat(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    sail = (246, 246, 240) if o.colour != "white" else (225, 225, 215)
    pen.line([(0.5, 0.04), (0.5, 0.72)], (70, 50, 35), 0.022)
    pen.poly([(0.53, 0.05), (0.53, 0.66), (0.94, 0.66)], c)
    pen.poly([(0.47, 0.14), (0.47, 0.66), (0.12, 0.66)], sail)
    pen.poly([(0.0, 0.7), (1.0, 0.7), (0.86, 0.95), (0.1, 0.95)], c)
    pen.line([(0.04, 0.75), (0.96, 0.75)], mix(c, (255, 255, 255), 0.6), 0.03)


def _draw_tree(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    trunk = (96, 64, 38)
    if o.variant == "pine":
        pen.rect(0.43, 0.8, 0.57, 1.0, trunk)
        pen.poly([(0.5, 0.36), (1.0, 0.84), (0.0, 0.84)], shade(c, 0.9))
        pen.poly([(0.5, 0.17), (0.9, 0.6), (0.1, 0.6)], c)
        pen.poly([(0.5, 0.0), (0.8, 0.36), (0.2, 0.36)], shade(c, 1.08))
        return
    pen.poly([(0.43, 1.0), (0.57, 1.0), (0.54, 0.5), (0.46, 0.5)], trunk)
    for u, v, r, k in ((0.28, 0.42, 0.2, 0.9), (0.72, 0.42, 0.2, 0.92), (0.5, 0.3, 0.27, 1.0),
                       (0.36, 0.2, 0.17, 1.06), (0.64, 0.22, 0.17, 1.04)):
        pen.circle(u, v, r * rng.uniform(0.92, 1.05), shade(c, k))


def _draw_house(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    roof = (72, 72, 78) if o.colour in ("red", "pink", "brown", "orange") else (120, 48, 38)
    pen.rect(0.68, 0.06, 0.8, 0.3, (110, 90, 80))
    pen.rect(0.08, 0.42, 0.92, 1.0, c)
    pen.poly([(0.0, 0.44), (0.5, 0.0), (1.0, 0.44)], roof)
    pen.rect(0.42, 0.66, 0.58, 1.0, (90, 58, 36))
    for u in (0.16, 0.66):
        pen.rect(u, 0.54, u + 0.18, 0.76, (170, 200, 225))
        pen.line([(u + 0.09, 0.54), (u + 0.09, 0.76)], (245, 245, 245), 0.015)
        pen.line([(u, 0.65), (u + 0.18, 0.65)], (245, 245, 245), 0.015)


def _draw_kite(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
    bow = (250, 250, 250) if o.colour not in ("white", "yellow") else (220, 40, 40)
    ground_v = (pen.frame_h - pen.y0) / pen.h
    pen.line([(0.5, 0.26), (-0.9, ground_v)], (235, 235, 235), 0.006)
    tail = [(0.5, 0.62), (0.44, 0.72), (0.54, 0.82), (0.46, 0.92), (0.52, 1.0)]
    pen.line(tail, (60, 60, 60), 0.01)
    for u, v in tail[1:]:
        pen.poly([(u - 0.08, v - 0.03), (u + 0.08, v + 0.03), (u + 0.08, v - 0.03), (u - 0.08, v + 0.03)], bow,
                 edge=False)
    pen.poly([(0.5, 0.0), (0.98, 0.24), (0.5, 0.64), (0.02, 0.24)], c)
    pen.poly([(0.5, 0.0), (0.98, 0.24), (0.5, 0.24)], shade(c, 0.82), edge=False)
    pen.line([(0.5, 0.0), (0.5, 0.64)], shade(c, 0.5), 0.012)
    pen.line([(0.02, 0.24), (0.98, 0.24)], shade(c, 0.5), 0.012)


def _draw_flower(pen: Pen, c: RGB, o: SceneObject, rng: random.Random) -> None:
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
        pen.d.ellipse((px - r, py - r, px + r, py + r), fill=c, outline=shade(c, 0.7), width=pen.lw)
    centre = (110, 70, 30) if o.colour in ("yellow", "orange") else (245, 200, 40)
    r = 0.34 * R
    pen.d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=centre)


FIGURES: dict[str, Callable[[Pen, RGB, SceneObject, random.Random], None]] = {
    "dog": _draw_dog, "cat": _draw_cat, "horse": _draw_horse, "bird": _draw_bird, "person": _draw_person,
    "ball": _draw_ball, "car": _draw_car, "boat": _draw_boat, "tree": _draw_tree, "house": _draw_house,
    "kite": _draw_kite, "flower": _draw_flower,
}
