"""Drawing primitives: colour helpers and a pen that draws in coordinates relative to an object's box."""
from __future__ import annotations

import random

from PIL import ImageDraw

from pipeline.datasets.demo.vocabulary import RGB

SUPERSAMPLE = 2  # scenes are drawn at twice the size and reduced, which smooths the edges


def shade(c: RGB, k: float) -> RGB:
    """The colour scaled by ``k`` (darker below 1)."""
    return tuple(int(min(255, max(0, v * k))) for v in c)  # type: ignore[return-value]


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """The colour a fraction ``t`` of the way from ``a`` to ``b``."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def jitter(c: RGB, rng: random.Random, amount: float = 10) -> RGB:
    """The colour with each channel moved at random by up to ``amount``."""
    return tuple(int(min(255, max(0, v + rng.uniform(-amount, amount)))) for v in c)  # type: ignore[return-value]


class Pen:
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
