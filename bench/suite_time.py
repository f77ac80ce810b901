"""How long the test suite takes serially and on N pytest-xdist workers, whole pytest processes, alternating.

Every row is ``python -m pytest -p no:cacheprovider -q [-n N] [--dist loadgroup ...] TESTS`` started from
scratch, the way ``make test`` starts it (collection, each worker's start and its session fixtures included);
in each round every row runs once, in the given order in even rounds and reversed in odd ones
(``bench.alternating``), so the rows see the same machine in turn. The table gives the median wall time and the
range over the rounds, and each row against the serial run round by round (the baseline: the suite as
``make test`` ran it before xdist). A row whose pytest fails is reported with its exit code, every failed test and its last line:
a speed-up bought with failures is not one.

``--tests`` picks what runs (pytest arguments: files, ``-k`` or ``-m`` expressions); the default is the whole
suite (tests/). The machine is shared: print the load with every result and compare rows of the same run only.

``--timeline`` answers where a parallel run's wall time goes: each run's workers record when each test ran
(``CAPSEARCH_TEST_TIMELINE``, tests/conftest.py), and the table gives per worker its start-up (until its first
test), the time in tests, when it went idle, and the modules it ran longest; the worker that ends last is the
suite's critical path; its CPU column is each worker's own CPU and that of the children it waited for.

``--processes`` (with ``--timeline``) answers where a CPU-bound run's CPU goes: a thread of this process reads
every process's CPU time from ``/proc`` four times a second, and the table gives the CPU of the processes the
run started by kind (METEOR jars, capsearch commands, Prefect servers, Dask, ...) and by the test module they
were started in (``PYTEST_CURRENT_TEST`` in their environment). A process that lives under a quarter of a
second is missed, and up to a quarter of a second of each one's end: the totals are a lower bound.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import Spread, alternating, load_average, machine, ratios

REPO = Path(__file__).resolve().parents[1]
QUIET = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
         "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass(frozen=True)
class Run:
    wall: float
    code: int
    tail: str


def pytest_argv(workers: int, tests: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    if workers:
        argv += ["-n", str(workers)]          # --dist loadgroup --no-loadscope-reorder come from pyproject.toml
    return argv + tests


class ProcessSampler:
    """Every process's CPU seconds (user + system), its command line and the test it was started in, read from
    /proc every ``every`` seconds in a thread of this process until ``stop``."""

    def __init__(self, every: float = 0.25) -> None:
        import threading

        self.every = every
        self.seen: dict[tuple[int, int], dict] = {}
        self._stop = threading.Event()
        self._before = set(self._scan(record=False))
        self._thread = threading.Thread(target=self._loop, name="process-sampler", daemon=True)
        self._thread.start()

    def _scan(self, record: bool = True) -> list[tuple[int, int]]:
        tick = os.sysconf("SC_CLK_TCK")
        keys = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            key = (int(entry), int(fields[19]))              # pid and start time: a reused pid is another process
            keys.append(key)
            if not record or key in self._before:
                continue
            seen = self.seen.get(key)
            if seen is None:
                try:
                    command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                test = next((v.split(b"=", 1)[1].decode(errors="replace") for v in environ
                             if v.startswith(b"PYTEST_CURRENT_TEST=")), "")
                seen = self.seen[key] = {"command": command.strip(), "test": test}
            seen["cpu"] = (int(fields[11]) + int(fields[12])) / tick
        return keys

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._scan()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def kind(command: str) -> str:
        checks = (("meteor", "METEOR jar"), ("stanford-corenlp", "PTB tokenizer jar"),
                  ("exec(eval(sys.stdin", "xdist worker"), ("-m pytest", "pytest"),
                  ("flows.runtime.local_server", "local Prefect server"), ("prefect.engine", "Prefect deployment run"),
                  ("uvicorn", "Prefect server"), ("prefect.server", "Prefect server"), ("prefect server", "Prefect server"),
                  ("dask", "Dask"), ("distributed", "Dask"), ("moto", "S3 server (moto)"), ("vlm_server", "VLM server"),
                  ("-m capsearch", "capsearch command"), ("bin/capsearch", "capsearch command"), ("tmux", "tmux"), ("java", "other Java"))
        return next((name for needle, name in checks if needle in command), "other")

    def table(self, top: int = 12) -> str:
        from collections import defaultdict

        kinds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        modules: dict[str, float] = defaultdict(float)
        for p in self.seen.values():
            kind = self.kind(p["command"])
            kinds[kind][0] += 1
            kinds[kind][1] += p.get("cpu", 0.0)
            if kind != "xdist worker":
                modules[p["test"].split("::", 1)[0].removeprefix("tests/") or "(no test)"] += p.get("cpu", 0.0)
        total = sum(c for _, c in kinds.values())
        out = [f"\nprocesses: {len(self.seen)} started, {total:.0f} s of CPU (a lower bound)",
               "| kind | processes | CPU s |", "|---|---:|---:|"]
        out += [f"| {k} | {n} | {c:.0f} |" for k, (n, c) in sorted(kinds.items(), key=lambda kv: -kv[1][1])]
        out += ["\n| test module the processes were started in (workers aside) | CPU s |", "|---|---:|"]
        out += [f"| {m} | {c:.0f} |" for m, c in sorted(modules.items(), key=lambda kv: -kv[1])[:top]]
        return "\n".join(out)


def run_once(workers: int, tests: list[str], timeout: float, timeline: Path | None = None,
             processes: bool = False) -> Run:
    env = {**os.environ, **QUIET}
    if timeline is not None:
        timeline.mkdir(parents=True, exist_ok=True)
        env["CAPSEARCH_TEST_TIMELINE"] = str(timeline)
    sampler = ProcessSampler() if processes else None
    start = time.monotonic()
    try:
        proc = subprocess.run(pytest_argv(workers, tests), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out = -1, f"timed out after {timeout:.0f} s\n{exc.stdout or ''}"
    wall = time.monotonic() - start
    if sampler is not None:
        sampler.stop()
    if timeline is not None:
        print(timeline_table(timeline, time.time() - wall), flush=True)
    if sampler is not None:
        print(sampler.table(), flush=True)
    lines = [line for line in str(out).splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]   # -ra's summary: every one
    return Run(wall, code, "\n".join(failed + lines[-1:]))


def timeline_table(folder: Path, started: float, top: int = 3) -> str:
    """Per worker: start-up, time in tests, when it went idle (seconds from the run's start), its longest modules."""
    import json
    from collections import defaultdict

    rows = [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines() if line]
    by_worker: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_worker[r["worker"]].append(r)
    out = [f"\ntimeline ({len(rows)} tests, {folder}):", "| worker | first test at s | in tests s | CPU s | idle from s | "
           "longest modules (s) |", "|---|---:|---:|---:|---:|---|"]
    for worker, rs in sorted(by_worker.items(), key=lambda kv: max(r["end"] for r in kv[1])):
        modules: dict[str, float] = defaultdict(float)
        for r in rs:
            modules[r["test"].split("::", 1)[0].removeprefix("tests/")] += r["end"] - r["start"]
        longest = ", ".join(f"{m} {t:.0f}" for m, t in sorted(modules.items(), key=lambda kv: -kv[1])[:top])
        out.append(f"| {worker} | {min(r['start'] for r in rs) - started:.0f} | {sum(r['end'] - r['start'] for r in rs):.0f}"
                   f" | {sum(r.get('cpu', 0.0) for r in rs):.0f} | {max(r['end'] for r in rs) - started:.0f} | {longest} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="0,2,3,4", help="comma-separated worker counts; 0 is the serial run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tests", default="tests", help="pytest arguments naming what runs (shell words)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one pytest run may take")
    p.add_argument("--timeline", type=Path, default=None,
                   help="a folder: record when each test ran on which worker, and print the workers' table per run")
    p.add_argument("--processes", action="store_true",
                   help="with --timeline: sample every process's CPU and print it by kind and by test module")
    args = p.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    tests = shlex.split(args.tests)
    print(f"# suite time: {machine()}; {load_average()}")
    print(f"# {' '.join(pytest_argv(0, tests)[1:])} with -n " + ", ".join(map(str, counts)) +
          f"; {args.rounds} rounds, alternating", flush=True)
    names = {w: ("serial" if w == 0 else f"-n {w}") for w in counts}
    def timeline(w: int) -> Path | None:      # a folder per run
        return args.timeline / f"{names[w].replace(' ', '')}-{time.strftime('%H%M%S')}" if args.timeline else None

    runs = alternating({names[w]: (lambda w=w: run_once(w, tests, args.timeout, timeline(w), args.processes)) for w in counts},
                       args.rounds)
    print(f"# after the rounds: {load_average()}")
    base = names[0] if 0 in counts else None
    print("\n| run | wall s, median (range) | against serial, median (range) | failed rounds |")
    print("|---|---:|---:|---:|")
    failed = False
    for name, rs in runs.items():
        walls = [r.wall for r in rs]
        against = ratios(walls, [r.wall for r in runs[base]]).show(".2f") if base and name != base else "-"
        bad = [r for r in rs if r.code != 0]
        failed = failed or bool(bad)
        print(f"| {name} | {Spread.of(walls).show('.0f')} | {against} | {len(bad)} of {len(rs)} |")
    for name, rs in runs.items():
        for i, r in enumerate(rs):
            if r.code != 0:
                print(f"\n{name}, round {i + 1}: exit code {r.code}\n{r.tail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
