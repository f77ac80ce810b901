"""`capsearch status` (and the TUI's stage counts) on a 10,000-photo workspace: ``workspace_status`` as shipped
against the same call with every store read going to SQLite.

``workspace_status`` asks every stage for its counts; the stages ask the store for the same captions and reference
captions many times over (20 reads of the same two tables at 10k photos). Shipped, it runs inside
``Store.reuse_reads()``, which reads each set once per report and answers the rest from that read. The baseline
is the same report with ``reuse_reads`` turned into a no-op on the same store: the behaviour before it, on the
same workspace, alternating with the shipped path round by round. Both reports are checked to be equal.

Builds (once) the synthetic workspace of ``bench/_tui_workspace.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

from bench import Spread, alternating, load_average, machine, ratios


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=10_000)
    p.add_argument("--root", type=Path, default=None, help="where the workspace is built (default: the TUI benchmarks')")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    from bench._tui_workspace import DEFAULT_ROOT, build_workspace
    from pipeline.status import workspace_status

    ws = build_workspace(args.root or DEFAULT_ROOT, args.photos, quiet=True)
    store = ws.store
    reports: dict[str, str] = {}

    def timed(name: str, reuse: bool) -> float:
        if reuse:
            store.__dict__.pop("reuse_reads", None)          # the class's method: as shipped
        else:
            store.reuse_reads = contextlib.nullcontext        # every call reads SQLite, as before
        try:
            t0 = time.perf_counter()
            report = workspace_status(ws)
            took = time.perf_counter() - t0
        finally:
            store.__dict__.pop("reuse_reads", None)
        reports[name] = json.dumps(report.as_dict(), sort_keys=True, default=str)
        return took

    timed("warm-up", True)
    results = alternating({"reads reused (shipped)": lambda: timed("shipped", True),
                           "every read from SQLite": lambda: timed("baseline", False)}, args.rounds)
    if reports["shipped"] != reports["baseline"]:
        raise SystemExit("the two status reports differ")
    print(f"# {machine()}; {load_average()}")
    print(f"workspace {ws.root}: {store.count_images()} photos; {args.rounds} alternating rounds; reports equal")
    for name, values in results.items():
        print(f"{name:>24}: {Spread.of(values).show('.3f', ' s')}")
    speedup = ratios(results["every read from SQLite"], results["reads reused (shipped)"])
    print(f"{'speed-up':>24}: {speedup.show('.2f', 'x')} (per round: baseline / shipped)")
