"""Benchmarks that print ratios (``python -m bench`` runs every module's ``main()``); never part of the tests.

Weights do not change the cost of a forward pass, so the model benchmarks use randomly
initialised models of the real architectures, built offline.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")


def machine() -> str:
    """One line naming the machine, the accelerator (if any) and the date, to print with every result."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
        threads = f", torch {torch.__version__} with {torch.get_num_threads()} threads"
    except ImportError:
        threads = ""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{cpu}, {os.cpu_count()} cores, {gpu}{threads}; {date}"


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` holds the seconds taken."""
    out = [0.0]
    start = time.perf_counter()
    try:
        yield out
    finally:
        out[0] = time.perf_counter() - start


def load_average() -> str:
    """The 1, 5 and 15 minute load averages and the core count, to print with timings on a shared machine."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


def alternating(paths: "dict[str, Callable[[], T]]", rounds: int) -> "dict[str, list[T]]":
    """Call every path once per round, in the given order in even rounds and reversed in odd ones.

    Paths compared this way see the same machine state in turn (a warm cache, another process's
    burst of work), so their ratio within a round means something even on a busy machine.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1 (got {rounds})")
    names = list(paths)
    out: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(paths[name]())
    return out


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated measurements."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: "Sequence[float]") -> "Spread":
        if not values:
            raise ValueError("no measurements")
        return cls(statistics.median(values), min(values), max(values))

    def scaled(self, factor: float) -> "Spread":
        return Spread(self.median * factor, self.low * factor, self.high * factor)

    def show(self, fmt: str = ".3g", unit: str = "") -> str:
        return f"{self.median:{fmt}}{unit} ({self.low:{fmt}}-{self.high:{fmt}})"

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "low": self.low, "high": self.high}


def ratios(numerators: "Sequence[float]", denominators: "Sequence[float]") -> Spread:
    """Per-round ratios (round i of one path against round i of the other), as a spread."""
    return Spread.of([a / b for a, b in zip(numerators, denominators, strict=True)])


def growth_exponent(sizes: "Sequence[float]", values: "Sequence[float]") -> float:
    """The slope of log(value) against log(size) (least squares): 1 is linear, 2 quadratic, 0 constant."""
    import math

    pairs = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if s > 0 and v > 0]
    if len(pairs) < 2:
        return float("nan")
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    return sum((x - mx) * (y - my) for x, y in pairs) / sxx if sxx else float("nan")
