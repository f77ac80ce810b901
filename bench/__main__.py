"""Run the benchmarks: ``python -m bench`` (all of them, at their full sizes: an hour or more on 2 cores),
``python -m bench --quick`` (all of them at small sizes, what ``make bench`` runs: a few minutes; it checks
that every benchmark runs end to end, its numbers are not the ones in docs/benchmarks.md), or
``python -m bench NAME ...`` (module names, full sizes; with ``--quick``, small sizes)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import time
import traceback

import bench

# Small sizes for --quick: every benchmark end to end (three alternating rounds where it has rounds).
QUICK: dict[str, list[str]] = {
    "caption_metrics": ["--images", "60", "--targets", "20", "--rounds", "3"],
    "captioning_batch": ["--size", "small", "--photos", "4", "--batch-sizes", "1,2,4", "--max-new-tokens", "6",
                         "--rounds", "3"],
    "cli_latency": ["--photos", "1000", "--root", "outputs/bench-tui-1k", "--rounds", "3"],
    "cluster": ["--images", "48", "--rounds", "3", "--workers", "1,2", "--commits", "10"],
    "collection_search": ["--sizes", "2000", "--rounds", "3", "--queries", "5"],
    "endpoint_captioning": ["--photos", "4", "--concurrency", "1,4", "--max-new-tokens", "4", "--rounds", "3"],
    "evaluate_time": ["--targets", "100", "--rounds", "3"],
    "flows_overhead": ["--images", "80", "--targets", "20", "--rounds", "3"],
    "gpu": ["--device", "cpu", "--quick"],
    "image_embedding": ["--photos", "32", "--batch-size", "16", "--single-photos", "8", "--rounds", "3"],
    "neighbour_search": ["--sizes", "10000,40000", "--faiss", "--rounds", "3", "--store-up-to", "10000"],
    "progress_reporting": ["--images", "80", "--targets", "20", "--rounds", "3"],
    "rescan": ["--photos", "300", "--rounds", "3"],
    "run_artifacts": ["--images", "80", "--targets", "20", "--rounds", "3", "--tasks", "16"],
    "scale": ["--sizes", "300,1000", "--embed-up-to", "1000"],
    "search_latency": ["--sizes", "10000,100000", "--dims", "384", "--rounds", "3", "--no-end-to-end"],
    "status_report": ["--photos", "1000", "--root", "outputs/bench-tui-1k", "--rounds", "3"],
    "store_protocol": ["--sizes", "10000,100000", "--rounds", "3", "--batches", "50"],
    "suite_time": ["--workers", "0,2", "--rounds", "1", "--tests", "tests/test_config.py tests/test_prompts.py",
                   "--timeline", "outputs/bench-suite-timeline", "--processes"],
    "tui_search": ["--photos", "1000", "--queries", "4", "--root", "outputs/bench-tui-1k"],
    "tui_startup": ["--workspace", "outputs/bench-tui-1k/ws", "--repeats", "3"],
}


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def run(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if a != "--quick"] or modules()
    unknown = sorted(set(names) - set(modules()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(modules())}", file=sys.stderr)
        return 2
    print(f"# {bench.machine()}; {bench.load_average()}{'; quick sizes' if quick else ''}")
    failed = []
    started = time.perf_counter()
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n## {name}" + (f" {' '.join(QUICK.get(name, []))}" if quick else ""), flush=True)
        t0 = time.perf_counter()
        main = module.main
        args = QUICK.get(name, []) if quick else []
        try:
            code = main(args) if inspect.signature(main).parameters else main()
        except Exception:  # noqa: BLE001 - one broken benchmark is reported; the others still run
            traceback.print_exc()
            code = 1
        if isinstance(code, int) and code != 0:
            failed.append(name)
        print(f"## {name}: {time.perf_counter() - t0:.0f} s; {bench.load_average()}", flush=True)
    print(f"\n# {len(names)} benchmarks in {time.perf_counter() - started:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
