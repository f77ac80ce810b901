"""What Prefect orchestration costs: the ``pipeline`` flow vs the same stages called directly.

On the demo world in the lite profile:

1. every stage run directly with ``run_stage`` (no Prefect) on one workspace, and the
   ``pipeline`` flow (``flows.api.run``, one batch at a time) on another, alternating over
   ``--rounds`` rounds on fresh workspaces (order reversed every other round): the ratio per
   round, and the seconds of overhead per task (batch tasks plus one flow run per stage and the
   pipeline's own) of the median round;
2. a re-run with nothing to compute vs the cold run (aim: under 10 %), three times. Since
   issue 20 such a run settles every stage before Prefect starts (``flows.plan``): no flow
   run, no Prefect call; before, it was a fully cached flow run;
3. the first run of a process with a fresh Prefect home vs with a migrated one (what
   ``capsearch init`` leaves), each in a new process, timed from the start of the process
   to the end of a run of ``ingest`` with nothing to compute: since the settling, none of
   them touches Prefect, so the three read alike (the local server's start, which a run
   with work pays once per idle period, is measured by ``bench/cli_latency.py``).

Models are loaded and Prefect's local server is started before the timed runs (a
warm-up pipeline on a throwaway workspace), so 1 and 2 compare orchestration only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench import Spread, alternating, machine

REPO = Path(__file__).resolve().parents[1]

_FIRST_RUN = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import sys
    from flows.api import run
    from pipeline.workspace import Workspace
    t1 = time.perf_counter()
    summary = run(Workspace(sys.argv[1]), ["ingest"])
    t2 = time.perf_counter()
    print(f"{t1 - t0:.3f} {t2 - t1:.3f} {summary.stage('ingest').cached}")
""")


def _workspace(root: Path, world: Path, n_images: int, n_targets: int, batch_size: int):
    from pipeline.config_file import update_config_file
    from pipeline.workspace import Workspace

    update_config_file(root / "capsearch.toml", {
        "data": {"source": "demo", "path": str(world), "demo_images": n_images, "demo_seed": 7, "n_targets": n_targets},
        "orchestration": {"batch_size": batch_size}}, profile="lite")
    return Workspace(root)


_WORK_METHODS = ("prepare", "plan", "settled_items", "run_batch", "finalize")


@contextmanager
def stage_work() -> Iterator[list[float]]:
    """Sum the seconds spent inside the stages' own methods (what any orchestration must pay)."""
    from pipeline.stages.registry import STAGE_ORDER, stage_class

    total = [0.0]
    lock = threading.Lock()
    local = threading.local()
    saved: list[tuple[type, str, object]] = []

    def wrap(fn):
        def timed(*args, **kwargs):
            if getattr(local, "inside", False):       # plan() calls settled_items(): count once
                return fn(*args, **kwargs)
            local.inside = True
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                local.inside = False
                with lock:
                    total[0] += time.perf_counter() - t0
        return timed

    for cls in {stage_class(name) for name in STAGE_ORDER}:
        for name in _WORK_METHODS:
            saved.append((cls, name, cls.__dict__.get(name)))
            setattr(cls, name, wrap(getattr(cls, name)))
    try:
        yield total
    finally:
        for cls, name, original in saved:
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)


def _timed_run(run, ws):
    with stage_work() as work:
        t0 = time.perf_counter()
        summary = run(ws)
        wall = time.perf_counter() - t0
    return wall, work[0], summary


def _direct(ws) -> float:
    """Every stage with ``run_stage``, in a worker thread as the flow's tasks run.

    (On a busy machine torch's OpenMP threads are much slower on the main thread than
    on another one, which would flatter the flow.)
    """
    from pipeline.stages.run import run_stage
    from pipeline.stages.registry import pipeline_stages

    def stages() -> None:
        for stage in pipeline_stages(ws):
            run_stage(stage)

    with stage_work() as work:
        t0 = time.perf_counter()
        worker = threading.Thread(target=stages, name="direct")
        worker.start()
        worker.join()
        wall = time.perf_counter() - t0
    return wall, work[0]


def _first_run_seconds(home: Path, ws_root: Path) -> tuple[float, float]:
    """(seconds to import the flows API, seconds of the process's first run) in a new process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _FIRST_RUN, str(ws_root)], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=900, check=True)
    imports, first, _cached = out.stdout.split()[-3:]
    return float(imports), float(first)


def _prepare_seconds(home: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(REPO))
    code = ("from flows.runtime.server import prepare_prefect; from flows.runtime.local_server import stop_local_server; "
            "print(prepare_prefect()); stop_local_server()")
    out = subprocess.run([sys.executable, "-c", code],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=True)
    return float(out.stdout.split()[-1])


THREADS_ENV = "CAPSEARCH_ORCHESTRATION__FLOW_THREADS"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of direct and flow")
    args = parser.parse_args(argv or [])
    args.tmp = Path(tempfile.mkdtemp(prefix="capsearch-bench-flows-"))
    try:
        _main(args)
    finally:
        shutil.rmtree(args.tmp, ignore_errors=True)


def _main(args: argparse.Namespace) -> None:

    tmp = args.tmp
    if "prefect" not in sys.modules:
        os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    from flows.api import run
    from flows.runners import thread_workers
    from pipeline.datasets.demo import generate_demo_world

    print(f"# {machine()}")
    world = tmp / "world"
    generate_demo_world(world, n_images=args.images, seed=7)
    print(f"demo world {args.images} photos, {args.targets} targets, batch size {args.batch_size}, lite profile")

    warm = _workspace(tmp / "warm", world, args.images, args.targets, args.batch_size)
    _direct(warm)
    run(_workspace(tmp / "warm-flow", world, args.images, args.targets, args.batch_size), ["ingest"])

    fresh = iter(range(1_000_000))

    def direct() -> tuple[float, float]:
        return _direct(_workspace(tmp / f"direct-{next(fresh)}", world, args.images, args.targets, args.batch_size))

    def one_at_a_time() -> tuple[float, float, object]:
        os.environ[THREADS_ENV] = "1"       # one batch at a time, as run_stage does (orchestration.flow_threads): the pure overhead
        try:
            return _timed_run(run, _workspace(tmp / f"flow-1-{next(fresh)}", world, args.images, args.targets,
                                              args.batch_size))
        finally:
            os.environ.pop(THREADS_ENV, None)

    # direct and flow alternate on fresh workspaces (order reversed every other round); the median round is kept
    paired = alternating({"direct": direct, "flow": one_at_a_time}, args.rounds)
    ratios_ = [f[0] / d[0] for d, f in zip(paired["direct"], paired["flow"])]
    middle = sorted(range(args.rounds), key=lambda i: ratios_[i])[args.rounds // 2]
    (direct_s, direct_work), (seq_s, seq_work, seq) = paired["direct"][middle], paired["flow"][middle]
    flow_ws = _workspace(tmp / "flow", world, args.images, args.targets, args.batch_size)
    flow_s, flow_work, cold = _timed_run(run, flow_ws)
    reruns = [_timed_run(run, flow_ws) for _ in range(3)]
    cached_s, cached_work, cached = sorted(reruns, key=lambda r: r[0])[1]

    tasks = seq.batches + len(seq.stages) + 1
    overhead = (seq_s - seq_work) - (direct_s - direct_work)
    print("wall seconds; 'stage work' is the time inside the stages' own methods in that same run")
    print(f"stages run directly (run_stage):           {direct_s:7.2f} s  (stage work {direct_work:.2f} s)")
    print(f"pipeline flow, cold, 1 batch at a time:    {seq_s:7.2f} s  (stage work {seq_work:.2f} s; "
          f"{seq.batches} batch tasks, {len(seq.stages)} stage flows + the pipeline flow)")
    print(f"  ratio flow / direct (wall):              {seq_s / direct_s:7.2f}  (the median of {args.rounds} alternating "
          f"rounds on fresh workspaces: {Spread.of(ratios_).show('.2f')})")
    print(f"  orchestration seconds beyond direct:     {overhead:7.2f} s = {overhead / tasks:.3f} s per task "
          f"({tasks} tasks and flow runs)")
    print(f"  ratio flow / direct (wall - stage work): {(seq_s - seq_work + direct_work) / direct_s:7.2f}")
    print(f"pipeline flow, cold, {thread_workers()} batches in flight:   {flow_s:7.2f} s  "
          f"(stage work {flow_work:.2f} s, summed over threads)")
    print(f"re-run, nothing to compute (median of 3):  {cached_s:7.2f} s  (stage work {cached_work:.2f} s; "
          f"{cached.reused_batches} of {cached.batches} batches reused, {cached.cached_batches} from the cache; runs: "
          f"{', '.join(f'{r[0]:.2f}' for r in reruns)} s)")
    print(f"  ratio cached / cold ({thread_workers()} in flight):        {cached_s / flow_s:7.3f}  (aim: < 0.10)")
    print(f"  ratio cached / cold (1 at a time):       {cached_s / seq_s:7.3f}")

    fresh_home = tmp / "fresh-prefect-home"
    imports_s, fresh_s = _first_run_seconds(fresh_home, flow_ws.root)
    _, migrated_s = _first_run_seconds(fresh_home, flow_ws.root)
    prep_home = tmp / "prepared-prefect-home"
    prep_s = _prepare_seconds(prep_home)
    _, prepared_s = _first_run_seconds(prep_home, flow_ws.root)
    print(f"new process: importing the flows API:            {imports_s:6.2f} s")
    print(f"new process, first run (cached ingest), fresh Prefect DB:    {fresh_s:6.2f} s")
    print(f"new process, first run, DB migrated by an earlier run:       {migrated_s:6.2f} s")
    print(f"new process, first run, DB prepared by `capsearch init`:     {prepared_s:6.2f} s  (init took {prep_s:.2f} s)")
    print(f"  ratio fresh / migrated:                        {fresh_s / migrated_s:6.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
