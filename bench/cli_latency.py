"""How long interactive `capsearch` commands take as whole processes, against fair baselines in the same rounds.

Every row is a process started from scratch (``subprocess.Popen``, reaped with ``os.wait4``): wall time from
the start to the exit and CPU time (user + system); peak memory (the kernel's max RSS of the process) from one
more run started by a small launcher (``PEAK_PROBE``). In each
round every row runs once, in the given order in even rounds and reversed in odd ones (``bench.alternating``);
tables give the median and the range over the rounds, and each row's wall time against ``python -c pass``
round by round. A warm-up round is not counted (it fills the page cache, writes ``.pyc`` files and, if the
workspace has none yet, exports the light query encoder).

The baselines: ``python -c pass`` (the interpreter's start: no command can be faster) and ``python -c "import
torch"`` (what any path that imports torch pays before doing anything). ``search (sentence-transformers)``
is the same search with ``text_embedder.light_queries = false``: the query embedded the way it was before
the light encoder (the model loaded through sentence-transformers).

``PYTHONDONTWRITEBYTECODE`` is removed from the commands' environment: a person's shell does not set it, and
with it every run compiles capsearch's own modules again.

Runs and stages (issue 20's "runs that start at once") are timed on a workspace the whole pipeline has run on
(``--run-workspace``; by default a small demo workspace under ``--run-root``, built once in a child: ``data demo``
then ``run``), with ``CAPSEARCH_HOME`` at its root so the local Prefect server is that home's:

* ``run (nothing to compute)`` and ``embed-images (nothing to compute)``: settled before Prefect starts;
* ``run with one stage to compute`` twice: with the home's local Prefect server already up (what every run after the
  first pays now), and with none running, so the run starts one (what every run paid before, when each started
  Prefect's temporary server). Before each timing (not timed) the report's files are deleted, so the report
  stage has its one item to compute, and the server is started (``local_api``) or stopped
  (``stop_local_server``) as the row says;
* ``tui first paint`` and ``tui quit``: ``capsearch tui`` in a pseudo-terminal (``bench.tui_startup.run_once``:
  first paint is the screen bar drawn, quit is q to the process's end), one session per round.

To add a row: append a ``Row`` to ``rows()`` (a name, the argv after ``python``, an optional goal in seconds,
environment and an untimed ``setup``); it is then timed in the same rounds as the others. ``--import-profile``
prints the slowest imports (``python -X importtime``, cumulative) of the ``capsearch`` rows instead.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import Spread, alternating, load_average, machine, ratios

QUERY = "a red car on the beach"
HEAVY = ("torch", "transformers", "sentence_transformers", "open_clip", "prefect", "sklearn")


@dataclass(frozen=True)
class Row:
    name: str
    argv: tuple[str, ...]                     # after the interpreter
    goal_s: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[], None] | None = None   # before each timing, not timed
    tui: bool = False                         # a `capsearch tui` session: first paint and quit, in a pty

    @property
    def capsearch(self) -> bool:
        return self.argv[:2] == ("-m", "capsearch")


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    code: int
    quit: float | None = None                 # tui rows: q to the process's end


TUI_QUIT_GOAL_S = 0.5


# Peak memory is measured by a small launcher, not by this process: a child's max RSS counts the copy of the
# process it was started from, and this one may have imported torch (``python -m bench`` names the machine).
PEAK_PROBE = ("import os, subprocess, sys\n"
              "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
              "stderr=subprocess.DEVNULL)\n"
              "_, status, usage = os.wait4(p.pid, 0)\n"
              "print(usage.ru_maxrss)\n")


def rows(workspace: str, run_workspace: str | None = None) -> list[Row]:
    ws = ("-m", "capsearch", "-w", workspace)
    out = [
        Row("python -c pass", ("-c", "pass")),
        Row('python -c "import torch"', ("-c", "import torch")),
        Row("search (cold)", (*ws, "search", QUERY), goal_s=1.5),
        Row("search (sentence-transformers)", (*ws, "search", QUERY),
            env={"CAPSEARCH_TEXT_EMBEDDER__LIGHT_QUERIES": "false"}),
        Row("status", (*ws, "status"), goal_s=1.0),
    ]
    if run_workspace is None:
        return out
    root = Path(run_workspace).resolve()
    home = {"CAPSEARCH_HOME": str(root.parent)}
    rw = ("-m", "capsearch", "-w", str(root))
    return out + [
        Row("run (nothing to compute)", (*rw, "run"), goal_s=3.0, env=home),
        Row("embed-images (nothing to compute)", (*rw, "embed-images"), goal_s=1.5, env=home),
        Row("run with one stage to compute (server up)", (*rw, "run"), env=home,
            setup=lambda: (_drop_report(root), _server(root.parent, up=True))),
        Row("run with one stage to compute (no server up)", (*rw, "run"),
            env={**home, "CAPSEARCH_SERVER_IDLE": "0"},
            setup=lambda: (_drop_report(root), _server(root.parent, up=False))),
        Row("tui", (*rw, "tui"), goal_s=1.5, env=home, tui=True),
    ]


def _drop_report(ws: Path) -> None:
    """The report's files deleted: the report stage has its one item to compute again."""
    shutil.rmtree(ws / "reports", ignore_errors=True)


def _server(home: Path, up: bool) -> None:
    """The capsearch home's local Prefect server started (``up``) or stopped, in a child (not timed)."""
    code = ("from flows.runtime.settings import apply_settings; apply_settings()\n"
            "from flows.runtime import local_server as ls\n"
            + ("with ls.local_api(idle=600):\n    pass\n" if up else "ls.stop_local_server()\n"))
    subprocess.run([sys.executable, "-c", code], env=environment({"CAPSEARCH_HOME": str(home)}), check=True,
                   timeout=300, stdin=subprocess.DEVNULL, capture_output=True)


def build_run_workspace(root: Path, images: int) -> Path:
    """A demo workspace the whole pipeline has run on, under ``root`` (built once, in children)."""
    ws = root / "ws"
    env = environment({"CAPSEARCH_HOME": str(root)})
    capsearch = [sys.executable, "-m", "capsearch", "-w", str(ws)]
    if not (ws / "capsearch.toml").is_file():
        subprocess.run([*capsearch, "data", "demo", "--images", str(images), "--path", str(root / "world")],
                       env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    subprocess.run([*capsearch, "run"], env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return ws


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(COLUMNS="120", **extra)
    return env


def run_once(row: Row, timeout: float = 300.0) -> Run:
    if row.setup is not None:
        row.setup()
    if row.tui:
        return tui_once(row)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *row.argv], env=environment(row.env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{row.name} failed (exit {proc.returncode}):\n{err[-2000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, proc.returncode)


def tui_once(row: Row) -> Run:
    """One ``capsearch tui`` session in a pseudo-terminal: first paint (wall) and q to the process's end (quit)."""
    from bench.tui_startup import run_once as session

    old = {k: os.environ.get(k) for k in row.env}
    os.environ.update(row.env)                 # the pty's command inherits this process's environment
    try:
        seen = session([sys.executable, *row.argv], "Pipeline", "ingest")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Run(seen["first"], float("nan"), 0, seen["quit"])


def peak_mib(row: Row) -> float:
    """The command's peak resident memory (MiB), from one run started by a small launcher."""
    if row.setup is not None:
        row.setup()
    done = subprocess.run([sys.executable, "-c", PEAK_PROBE, sys.executable, *row.argv], env=environment(row.env),
                          capture_output=True, text=True, timeout=300, check=True)
    return int(done.stdout.split()[-1]) / 1024


def import_profile(row: Row, top: int) -> list[tuple[float, str]]:
    """The ``top`` slowest top-level imports of one run of ``row`` (cumulative seconds, module)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *row.argv], env=environment(row.env),
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    found = []
    # self times can be negative: CPython keeps one running total for all threads, and the search imports
    # onnxruntime in a thread of its own while the main thread imports too
    for m in re.finditer(r"^import time:\s+-?\d+ \|\s+(\d+) \| (\S.*)$", done.stderr, re.M):
        if not m.group(2).startswith(" "):
            found.append((int(m.group(1)) / 1e6, m.group(2).strip()))
    names = {m.group(1).strip().split(".")[0]
             for m in re.finditer(r"^import time:\s+-?\d+ \|\s+\d+ \| (.+)$", done.stderr, re.M)}
    heavy = [h for h in HEAVY if h in names]
    print(f"\n{row.name}: {sum(t for t, _ in found):.3f} s of imports in all; heavy libraries imported: "
          f"{', '.join(heavy) or 'none'}")
    return sorted(found, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", default="outputs/demo", help="a workspace the pipeline ran on (make demo)")
    ap.add_argument("--photos", type=int, default=0,
                    help="instead: the synthetic workspace of bench/_tui_workspace.py with this many photos under "
                         "--root (built once, in a process of its own)")
    ap.add_argument("--root", default="outputs/bench-tui-1k", help="where --photos builds its workspace")
    ap.add_argument("--run-workspace", default=None,
                    help="a workspace the whole pipeline has run on, for the run, stage and tui rows (default: a demo "
                         "workspace under --run-root, built once)")
    ap.add_argument("--run-root", default="outputs/bench-cli-run", help="where the default --run-workspace is built")
    ap.add_argument("--run-images", type=int, default=200, help="photos of the default --run-workspace")
    ap.add_argument("--no-runs", action="store_true", help="leave out the run, stage and tui rows")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", default="", help="comma-separated row names to time (default: every row)")
    ap.add_argument("--import-profile", type=int, default=0, metavar="N",
                    help="print the N slowest imports of each capsearch row instead of timing")
    args = ap.parse_args(argv)
    if args.photos:
        # built in a child: this process must stay small (see below) and never import torch
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from bench._tui_workspace "
                        "import build_workspace; build_workspace(Path(sys.argv[1]), int(sys.argv[2]), quiet=True)",
                        args.root, str(args.photos)], check=True, env=environment({}))
        args.workspace = str(Path(args.root) / "ws")
    if not (Path(args.workspace) / "capsearch.toml").is_file():
        print(f"no workspace at {args.workspace}: run `make demo` (or give --workspace)", file=sys.stderr)
        return 2
    run_ws = None
    if not args.no_runs:
        run_ws = args.run_workspace or str(build_run_workspace(Path(args.run_root).resolve(), args.run_images))
    chosen = [r for r in rows(args.workspace, run_ws) if not args.only or r.name in args.only.split(",")]
    print(f"# {load_average()} (before)")
    if args.import_profile:
        for row in chosen:
            if row.capsearch and not row.tui and row.setup is None:
                for seconds, module in import_profile(row, args.import_profile):
                    print(f"  {seconds:7.3f} s  {module}")
        print(f"# {machine()}; {load_average()} (after)")
        return 0
    for row in chosen:                                   # warm-up: page cache, .pyc files, the query encoder
        run_once(row)
    results = alternating({row.name: (lambda row=row: run_once(row)) for row in chosen}, args.rounds)
    peaks = {row.name: peak_mib(row) for row in chosen if not row.tui}
    base = results.get("python -c pass")
    print(f"# {machine()}\n# {args.rounds} rounds; {load_average()} (after)\n")
    print(f"| command | wall s, median (range) | cpu s | peak MiB | x `python -c pass` | goal |")
    print("|---|---|---|---|---|---|")
    for row in chosen:
        runs = results[row.name]
        wall = Spread.of([r.wall for r in runs])
        versus = ratios([r.wall for r in runs], [r.wall for r in base]).show(".1f") if base else "-"
        goal = "" if row.goal_s is None else f"≤ {row.goal_s:g} s: {'met' if wall.median <= row.goal_s else 'MISSED'}"
        if row.tui:
            print(f"| tui first paint | {wall.show('.2f')} | - | - | {versus} | {goal} |")
            quit_ = Spread.of([r.quit for r in runs])
            met = "met" if quit_.median <= TUI_QUIT_GOAL_S else "MISSED"
            print(f"| tui quit (q to the process's end) | {quit_.show('.2f')} | - | - | - | "
                  f"≤ {TUI_QUIT_GOAL_S:g} s: {met} |")
            continue
        print(f"| {row.name} | {wall.show('.2f')} | {Spread.of([r.cpu for r in runs]).median:.2f} | "
              f"{peaks[row.name]:.0f} | {versus} | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
