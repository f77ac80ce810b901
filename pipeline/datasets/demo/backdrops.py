"""The backdrop of each background: sky and ground colours, low-frequency mottle and a texture per background."""
from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from pipeline.datasets.demo.pen import SUPERSAMPLE, jitter, shade
from pipeline.datasets.demo.scenes import Scene
from pipeline.datasets.demo.vocabulary import RGB


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


def draw_backdrop(scene: Scene, rng: random.Random, nrng: np.random.Generator, W: int, H: int) -> Image.Image:
    """The backdrop of a scene at drawing size (W, H): palette, gradient, texture."""
    bg, geo = scene.background, scene.geometry
    hz = geo["horizon"]
    J = lambda c, a=10: jitter(c, rng, a)  # noqa: E731
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
                 (shore + 0.001, ground), (1, shade(ground, 0.85))]
    elif bg == "forest":
        stops = [(0, J((150, 184, 160))), (0.3, J((52, 96, 52))), (hz, J((36, 72, 36))),
                 (hz + 0.001, J((96, 78, 48))), (1, J((70, 60, 36)))]
    else:  # indoor
        wall = J(rng.choice(((228, 212, 182), (236, 224, 200), (214, 200, 186), (226, 214, 172))), 6)
        stops = [(0, shade(wall, 0.92)), (hz, wall), (hz + 0.001, J((158, 106, 64), 8)), (1, J((120, 80, 46), 8))]
    mottle = 5.0 if bg in ("snow", "night") else 9.0
    arr = _vertical_gradient(H // SUPERSAMPLE, stops) + _mottle(nrng, H // SUPERSAMPLE, W // SUPERSAMPLE, 12, mottle)
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
        col = jitter(rng.choice(((150, 80, 60), (170, 170, 175), (200, 190, 165), (120, 120, 130))), rng, 12)
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
    d.polygon(pts, fill=jitter((46, 92, 52), rng, 8))
    for _ in range(70):
        x, y = rng.uniform(0, W), rng.uniform(hz + 4, shore)
        ln = rng.uniform(6, 20) * (0.5 + (y - hz) / (shore - hz))
        d.line((x, y, x + ln, y), fill=(200, 225, 245, 110), width=2)
    d.line((0, shore, W, shore), fill=(235, 240, 245, 160), width=3)


def _tex_forest(d, rng, W, H, geo):
    hz = geo["horizon"] * H
    for _ in range(rng.randint(8, 13)):
        x, w = rng.uniform(0, W), rng.uniform(0.02, 0.06) * W
        d.rectangle((x, 0.15 * H, x + w, hz + rng.uniform(0, 0.04) * H), fill=jitter((72, 52, 34), rng, 12))
    for _ in range(28):
        x, y, r = rng.uniform(0, W), rng.uniform(-0.05, 0.3) * H, rng.uniform(0.08, 0.16) * W
        d.ellipse((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=jitter((38, 88, 40), rng, 14) + (220,))
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
