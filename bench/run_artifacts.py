"""What the dashboard's artifacts and tags cost: the demo run with its Prefect artifacts and without, and batch
tasks with tags and without.

1. **Artifacts** (issue 24): every run writes its summary, and its stages their result tables, the report's link
   and their failures (``flows.artifacts``), once per stage run. This runs the demo (every stage of the lite
   profile on the demo world: 800 photos, 400 targets, what ``make demo`` runs) with
   ``orchestration.artifacts`` on and off, each time on a fresh workspace, in alternating rounds, in one process
   whose Prefect server and models were warmed up first; it prints each round's seconds, the ratio with /
   without, and the artifacts' own time measured inside the run (the wall-clock ratio on a busy machine carries
   more noise than the cost).
2. **Tags**: a flow of ``--tasks`` trivial tasks submitted to the thread runner, with two tags on every task run
   (what a ``prefect.tags`` context around a flow gives its tasks) and without, alternating: the time, and the
   HTTP requests to the Prefect API counted by path (Prefect takes a concurrency slot for the tags of every task
   run; capsearch tags its flow runs only).

    python -m bench.run_artifacts [--rounds 3] [--images 800] [--targets 400] [--tasks 64]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from bench import Spread, alternating, machine


def _workspace(root: Path, world: Path, n_images: int, n_targets: int, artifacts: bool):
    from pipeline.config_file import update_config_file
    from pipeline.workspace import Workspace

    update_config_file(root / "capsearch.toml", {
        "data": {"source": "demo", "path": str(world), "demo_images": n_images, "demo_seed": 7,
                 "n_targets": n_targets},
        "orchestration": {"artifacts": artifacts}}, profile="lite")
    return Workspace(root)


class _Timed:
    """Time spent in the functions that write the artifacts (reading the results and the API calls)."""

    def __init__(self) -> None:
        import flows.pipeline_flow as pipeline_flow
        import flows.stage_flows as stage_flows

        self.patched: list[tuple[Any, str, Callable[..., Any]]] = []
        self.calls = 0
        self.seconds = 0.0
        for module, name in ((stage_flows, "publish_stage"), (pipeline_flow, "publish_summary")):
            original = getattr(module, name)
            setattr(module, name, self._wrap(original))
            self.patched.append((module, name, original))

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - t0
        return timed

    def snapshot(self) -> tuple[int, float]:
        return self.calls, self.seconds

    def close(self) -> None:
        for module, name, original in self.patched:
            setattr(module, name, original)


def _artifacts(args: argparse.Namespace, tmp: Path) -> None:
    from flows.api import run
    from pipeline.datasets.demo import generate_demo_world
    from pipeline.stages.registry import available_stages

    world = tmp / "world"
    generate_demo_world(world, n_images=args.images, seed=7)
    stages = available_stages()
    print(f"demo run: {args.images} photos, {args.targets} targets, lite profile, stages {', '.join(stages)}")
    run(_workspace(tmp / "warm", world, args.images, args.targets, True), stages)   # server, models, caches
    timed = _Timed()
    count = {"n": 0}
    inside: list[tuple[int, float]] = []

    def one(artifacts: bool) -> Callable[[], float]:
        def go() -> float:
            count["n"] += 1
            ws = _workspace(tmp / f"run{count['n']}", world, args.images, args.targets, artifacts)
            before = timed.snapshot()
            t0 = time.perf_counter()
            summary = run(ws, stages)
            seconds = time.perf_counter() - t0
            assert summary.status == "completed", summary
            calls, spent = (a - b for a, b in zip(timed.snapshot(), before))
            line = f"{'with   ' if artifacts else 'without'} artifacts {seconds:7.2f} s"
            if artifacts:
                inside.append((calls, spent))
                line += f"  ({calls} publishing calls, {spent:.3f} s in them)"
            print(line, flush=True)
            return seconds
        return go

    try:
        times = alternating({"with": one(True), "without": one(False)}, args.rounds)
    finally:
        timed.close()
    ratios = [w / wo for w, wo in zip(times["with"], times["without"])]
    for name in ("with", "without"):
        s = Spread.of(times[name])
        print(f"{name:7} artifacts: median {s.median:7.2f} s (range {s.low:.2f}-{s.high:.2f})")
    print(f"ratio with / without, per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.3f}")
    spent = statistics.median(s for _, s in inside)
    median_run = statistics.median(times["without"])
    print(f"the artifacts' own time per run (median): {spent:.3f} s = {spent / median_run * 100:.2f} % of the "
          f"median run without them")


class _Requests:
    """Counts the HTTP requests this process makes to the Prefect API, by method and path."""

    def __init__(self) -> None:
        import httpx

        self.httpx = httpx
        self.counts: Counter[str] = Counter()
        self.originals = (httpx.Client.send, httpx.AsyncClient.send)
        sync_send, async_send = self.originals
        counts = self.counts
        uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

        def key(request: Any) -> str:
            return f"{request.method} {uuid.sub('{id}', request.url.path)}"

        def send(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            counts[key(request)] += 1
            return sync_send(client, request, *args, **kwargs)

        async def asend(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            counts[key(request)] += 1
            return await async_send(client, request, *args, **kwargs)

        httpx.Client.send, httpx.AsyncClient.send = send, asend   # type: ignore[method-assign]

    def close(self) -> None:
        self.httpx.Client.send, self.httpx.AsyncClient.send = self.originals   # type: ignore[method-assign]


def _tags(args: argparse.Namespace) -> None:
    from prefect import flow, tags, task
    from prefect.task_runners import ThreadPoolTaskRunner

    @task
    def nothing(i: int) -> int:
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2), persist_result=False)
    def many(n: int) -> int:
        return sum(f.result() for f in [nothing.submit(i) for i in range(n)])

    many(4)   # warm
    requests = _Requests()
    made: dict[str, list[Counter[str]]] = {"tagged": [], "untagged": []}

    def measured(name: str, tagged: bool) -> Callable[[], float]:
        def go() -> float:
            requests.counts.clear()
            t0 = time.perf_counter()
            if tagged:
                with tags("workspace:bench-000000", "profile:lite"):
                    many(args.tasks)
            else:
                many(args.tasks)
            seconds = time.perf_counter() - t0
            made[name].append(Counter(requests.counts))
            return seconds
        return go

    try:
        times = alternating({"tagged": measured("tagged", True), "untagged": measured("untagged", False)},
                            args.rounds)
    finally:
        requests.close()
    for name in ("tagged", "untagged"):
        s = Spread.of(times[name])
        n = statistics.median(sum(c.values()) for c in made[name])
        print(f"{args.tasks} tasks, {name:8}: median {s.median:6.2f} s (range {s.low:.2f}-{s.high:.2f}), "
              f"{n:.0f} API requests per flow run")
    extra = Counter()
    for c in made["tagged"]:
        extra.update(c)
    for c in made["untagged"]:
        extra.subtract(c)
    extra_text = ", ".join(f"{v / args.rounds:+.1f} {k}" for k, v in sorted(extra.items()) if v) or "none"
    print(f"requests a tagged flow of {args.tasks} tasks adds, per flow run: {extra_text} (task runs themselves are "
          "reported as events, not requests; Prefect caches 'no limit for these tags' for 5 s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--targets", type=int, default=400)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args(argv or [])

    tmp = Path(tempfile.mkdtemp(prefix="capsearch-bench-artifacts-"))
    if "prefect" not in sys.modules:
        os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    print(f"# {machine()}; load average {os.getloadavg()[0]:.2f} at the start")
    _artifacts(args, tmp)
    _tags(args)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
