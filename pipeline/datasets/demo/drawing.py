"""Rendering a demo scene with Pillow: backdrop, objects with shadows, then lighting and sensor noise."""
from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from pipeline.datasets.demo.backdrops import draw_backdrop
from pipeline.datasets.demo.figures import FIGURES
from pipeline.datasets.demo.pen import SUPERSAMPLE, Pen, shade
from pipeline.datasets.demo.scenes import Scene
from pipeline.datasets.demo.vocabulary import FLYING


def render_scene(scene: Scene, seed: int) -> Image.Image:
    """The photo of a scene: backdrop, objects (far ones first) and mild lighting and sensor noise."""
    W, H = int(scene.geometry["width"]), int(scene.geometry["height"])
    idx = int(scene.image_id.split("_")[1])
    rng = random.Random(f"capsearch-demo-render:{seed}:{idx}")
    nrng = np.random.default_rng([seed, idx, 1])
    img = draw_backdrop(scene, rng, nrng, W * SUPERSAMPLE, H * SUPERSAMPLE)
    d = ImageDraw.Draw(img, "RGBA")
    objects = sorted(scene.main + scene.others, key=lambda o: (o.box[3], o.box[0]))
    for o in objects:
        box = tuple(v * SUPERSAMPLE for v in o.box)
        grounded = o.action not in FLYING and o.action != "sail"
        if grounded:
            w = box[2] - box[0]
            base = box[3] + o.lift * SUPERSAMPLE
            d.ellipse((box[0] + 0.04 * w, base - 0.02 * w, box[2] - 0.04 * w, base + 0.03 * w), fill=(0, 0, 0, 70))
        edge = shade(o.rgb, 0.55) if sum(o.rgb) > 150 else (70, 70, 74)
        FIGURES[o.kind](Pen(d, box, o.facing, edge, H * SUPERSAMPLE), o.rgb, o, rng)  # type: ignore[arg-type]
        if o.action == "sail":
            y = box[3] - 0.05 * (box[3] - box[1])
            d.line((box[0] - 6, y, box[2] + 6, y), fill=(220, 235, 245, 170), width=3)
    img = img.reduce(SUPERSAMPLE)
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
