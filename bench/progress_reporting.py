"""What live progress reporting costs: the demo run with its progress written to the store, and without.

Every run records each stage's progress in the workspace store (``pipeline.live_progress``: a thread of
its own writes at most every 0.5 s per stage, plus at each stage's start and finish), so that another
process (a TUI, ``capsearch status --follow``) can show it. This runs the same run both ways: every
stage of the lite profile on the demo world (800 photos, 400 targets: what ``make demo`` runs), each time
on a fresh workspace, in alternating rounds (with then without, then without then with, ...), in one
process whose Prefect server and models were warmed up first. It prints each round's seconds and the
ratio with / without, their medians and ranges, and how many progress transactions a run wrote.

    python -m bench.progress_reporting [--rounds 3] [--images 800] [--targets 400]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import machine


def _workspace(root: Path, world: Path, n_images: int, n_targets: int):
    from pipeline.config_file import update_config_file
    from pipeline.workspace import Workspace

    update_config_file(root / "capsearch.toml", {
        "data": {"source": "demo", "path": str(world), "demo_images": n_images, "demo_seed": 7,
                 "n_targets": n_targets}}, profile="lite")
    return Workspace(root)


class _Accounting:
    """What the recorder itself spends: its transactions (``write_progress``, in its own thread) and the time the
    stages' threads spend handing it events (``ProgressRecorder.__call__``). Noise from other processes does
    not enter these, unlike the wall-clock ratio."""

    def __init__(self) -> None:
        import pipeline.live_progress as live

        self.live = live
        self.original_write = live.write_progress
        self.original_call = live.ProgressRecorder.__call__
        self.writes = 0
        self.write_seconds = 0.0
        self.events = 0
        self.event_seconds = 0.0
        self.lock = threading.Lock()

        def write(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return self.original_write(*args, **kwargs)
            finally:
                self.writes += 1
                self.write_seconds += time.perf_counter() - t0

        def call(recorder, event):
            t0 = time.perf_counter()
            try:
                return self.original_call(recorder, event)
            finally:
                with self.lock:
                    self.events += 1
                    self.event_seconds += time.perf_counter() - t0

        live.write_progress = write
        live.ProgressRecorder.__call__ = call

    def snapshot(self) -> tuple[int, float, int, float]:
        return self.writes, self.write_seconds, self.events, self.event_seconds

    def close(self) -> None:
        self.live.write_progress = self.original_write
        self.live.ProgressRecorder.__call__ = self.original_call


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--targets", type=int, default=400)
    args = parser.parse_args(argv or [])

    tmp = Path(tempfile.mkdtemp(prefix="capsearch-bench-progress-"))
    if "prefect" not in sys.modules:
        os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    from flows.api import run
    from pipeline.datasets.demo import generate_demo_world
    from pipeline.stages.registry import STAGE_ORDER

    print(f"# {machine()}; load average {os.getloadavg()[0]:.2f} at the start")
    world = tmp / "world"
    generate_demo_world(world, n_images=args.images, seed=7)
    stages = list(STAGE_ORDER)
    print(f"demo run: {args.images} photos, {args.targets} targets, lite profile, stages {', '.join(stages)}")

    run(_workspace(tmp / "warm", world, args.images, args.targets), stages)   # Prefect's server, models, caches
    accounting = _Accounting()
    times: dict[bool, list[float]] = {True: [], False: []}
    ratios: list[float] = []
    costs: list[tuple[int, float, int, float]] = []
    n = 0
    try:
        for r in range(args.rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            this: dict[bool, float] = {}
            for record in order:
                n += 1
                ws = _workspace(tmp / f"run{n}", world, args.images, args.targets)
                before = accounting.snapshot()
                t0 = time.perf_counter()
                summary = run(ws, stages, record_progress=record)
                this[record] = time.perf_counter() - t0
                assert summary.status == "completed", summary
                after = accounting.snapshot()
                cost = tuple(a - b for a, b in zip(after, before))
                line = f"round {r + 1}: {'with   ' if record else 'without'} progress {this[record]:7.2f} s"
                if record:
                    costs.append(cost)  # type: ignore[arg-type]
                    line += (f"  ({cost[0]} progress transactions, {cost[1]:.3f} s in them; {cost[2]} events, "
                             f"{cost[3]:.3f} s handing them over)")
                print(line, flush=True)
            for record, seconds in this.items():
                times[record].append(seconds)
            ratios.append(this[True] / this[False])
    finally:
        accounting.close()
    print(f"with progress:    median {statistics.median(times[True]):7.2f} s  "
          f"(range {min(times[True]):.2f}-{max(times[True]):.2f})")
    print(f"without progress: median {statistics.median(times[False]):7.2f} s  "
          f"(range {min(times[False]):.2f}-{max(times[False]):.2f})")
    print(f"ratio with / without, per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.3f}")
    writes = statistics.median(c[1] for c in costs)
    handing = statistics.median(c[3] for c in costs)
    median_run = statistics.median(times[False])
    print(f"the recorder's own time per run (median): {writes:.3f} s writing in its thread + {handing:.3f} s in the "
          f"stages' threads = {(writes + handing) / median_run * 100:.2f} % of the median run without it")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
