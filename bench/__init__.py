"""Benchmarks that print ratios (``python -m bench`` runs every module's ``main()``); never part of the tests.

Weights do not change the cost of a forward pass, so the model benchmarks use randomly
initialised models of the real architectures, built offline.
"""
from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator


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
