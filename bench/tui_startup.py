"""Time from ``capsearch tui`` to first paint (target: under 1.5 s), and from q to the shell whatever the app is
loading (target: 0.5 s), in a pseudo-terminal that answers like xterm.

Each command runs in a fresh pty (100x30, 10x20-pixel cells) whose reader answers the device-attributes query
(as xterm does: no sixel) and ignores the kitty-graphics query (as most terminals do):
``tests/fixtures/pty_terminal.PtyTerminal``. Timed from the spawn:

* first paint: the screen bar ("1 Pipeline ...") is drawn;
* counts: the stage table shows the per-stage counts read from the store (in a worker, after the paint);
* quit: from pressing q to the process exiting.

The baseline is a minimal Textual app that draws one line (what importing Textual and starting it costs).

**Quitting while something loads** (``--quit-scenarios``, on by default): q pressed on the Pipeline screen as soon
as the counts show (the search preload has just started loading the text model), on the Search screen while its
index loads (3, ctrl+q: the query box has the keyboard), on the Evaluation screen (4, q) and on the Runs screen while Prefect's history is read
(5, q); each alternating with the minimal app's quit. ``--stress N`` runs N busy-looping processes meanwhile (a
loaded machine: 4 on 2 cores gives a load average of 5-6); ``--before REF`` also runs each scenario with the
``tui`` package of git revision REF (extracted to a temporary folder, run from there), alternating.

Also listed: whether torch, transformers, sentence-transformers or Prefect were imported by the time the
app first painted (they must not be).
"""
from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from bench import alternating, load_average, machine
from tests.fixtures.pty_terminal import PtyTerminal

TARGET_S = 1.5
QUIT_TARGET_S = 0.5
ROWS, COLS = 30, 100
QUIT_WAIT_S = 60.0
MINIMAL_APP = ("from textual.app import App\nfrom textual.widgets import Static\n"
               "class A(App):\n    BINDINGS=[('q','quit')]\n    def compose(self):\n        yield Static('1 Pipeline')\n"
               "A().run()\n")
HEAVY = ("torch", "transformers", "sentence_transformers", "prefect", "open_clip")
PROBE_APP = ("import asyncio, sys\nfrom tui.app import CapsearchApp\n"
             "async def main():\n    app = CapsearchApp(sys.argv[1], image_mode='none')\n"
             "    async with app.run_test() as pilot:\n        await pilot.pause()\n"
             f"        print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
             "asyncio.run(main())\n")
# what is pressed once the counts show, before q: (keys, then text to wait for or seconds to wait)...
QUIT_SCENARIOS = {
    "Pipeline, preload starting": (),
    "Search, index loading": (b"3", "type a query"),     # the query box has the keyboard: ctrl+q quits
    "Evaluation": (b"4", "MedR"),
    "Runs, history loading": (b"5", "Stage runs"),
}


def run_once(argv: list[str], first: str, counts: str | None, steps: tuple = (), timeout: float = 90.0,
             cwd: Path | None = None, quit_key: bytes = b"q") -> dict[str, float]:
    """One session: first paint, counts, the ``steps`` (keys, then the text they bring or a pause...), then q."""
    seen: dict[str, float] = {}
    with PtyTerminal(argv, cols=COLS, rows=ROWS, cwd=cwd) as term:
        seen["first"] = term.wait_for(first, timeout)
        if counts is not None:
            seen["counts"] = term.wait_for(counts, timeout)
        for keys, then in zip(steps[::2], steps[1::2]):
            term.type(keys)
            if isinstance(then, str):
                term.wait_for(then, timeout)
                then = 0.2
            end = time.perf_counter() + then
            while time.perf_counter() < end:
                term.pump(0.005)
        pressed = time.perf_counter()
        term.type(quit_key)
        code = None
        while code is None and time.perf_counter() - pressed < QUIT_WAIT_S:
            term.pump(0.002)
            code = term.proc.poll()
        seen["quit"] = time.perf_counter() - pressed if code is not None else float("inf")
    return seen


def summary(runs: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in runs if key in r]
    if not values:
        return "-"
    text = f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"
    hung = sum(v == float("inf") for v in values)
    return text + (f"; {hung} of {len(values)} not ended after {QUIT_WAIT_S:.0f} s" if hung else "")


def tree_of(ref: str) -> Path:
    """A temporary folder holding the ``tui`` package as it was at git revision ``ref`` (``python -m tui`` run
    there imports it: the current folder comes first on ``sys.path``; the other packages are the installed ones)."""
    out = Path(tempfile.mkdtemp(prefix="capsearch-tui-before-"))
    data = subprocess.run(["git", "archive", "--format=tar", ref, "tui"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(out, filter="data")
    return out


class Stress:
    """``n`` processes that spin on the CPU until stopped (a loaded machine)."""

    def __init__(self, n: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                      for _ in range(n)]

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait()


def start_up(ws: str, capsearch: str, repeats: int) -> None:
    commands = {
        "minimal Textual app": ([sys.executable, "-c", MINIMAL_APP], None),
        "capsearch tui": ([capsearch, "--workspace", ws, "tui"], "ingest"),
        "python -m tui": ([sys.executable, "-m", "tui", "--workspace", ws], "ingest"),
    }
    for cmd, counts in commands.values():
        run_once(cmd, "Pipeline", counts)        # warm the file cache
    # the three commands take turns (order reversed every other round), so a busy moment hits them alike
    results = alternating({name: (lambda cmd=cmd, counts=counts: run_once(cmd, "Pipeline", counts))
                           for name, (cmd, counts) in commands.items()}, repeats)
    base = statistics.median(r["first"] for r in results["minimal Textual app"])
    for name, runs in results.items():
        first = statistics.median(r["first"] for r in runs)
        line = f"{name:>20}: first paint {summary(runs, 'first')}"
        if name != "minimal Textual app":
            line += (f" = {first / base:.1f}x the minimal app; counts {summary(runs, 'counts')}; "
                     f"first paint {'under' if first < TARGET_S else 'OVER'} the {TARGET_S} s target")
        print(line + f"; quit {summary(runs, 'quit')}")


def quitting(ws: str, repeats: int, before: Path | None) -> None:
    print(f"quit (q to the process's end; target {QUIT_TARGET_S} s), {repeats} alternating rounds each:")
    for scenario, steps in QUIT_SCENARIOS.items():
        key = b"\x11" if scenario.startswith("Search") else b"q"     # ctrl+q
        paths = {"minimal Textual app": lambda: run_once([sys.executable, "-c", MINIMAL_APP], "Pipeline", None),
                 "this tui": lambda steps=steps: run_once([sys.executable, "-m", "tui", "--workspace", ws],
                                                          "Pipeline", "ingest", steps, quit_key=key)}
        if before is not None:
            paths["tui before"] = lambda steps=steps: run_once([sys.executable, "-m", "tui", "--workspace", ws],
                                                               "Pipeline", "ingest", steps, cwd=before,
                                                               quit_key=key)
        results = alternating(paths, repeats)
        mine = statistics.median(r["quit"] for r in results["this tui"])
        print(f"  {scenario}: " + "; ".join(f"{name} {summary(runs, 'quit')}" for name, runs in results.items())
              + f" -> {'within' if mine <= QUIT_TARGET_S else 'OVER'} the target")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", type=Path, default=None,
                   help="workspace to open (default: the TUI benchmark's 10k-photo workspace, built if missing)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-start-up", action="store_true", help="skip the first-paint comparison")
    p.add_argument("--no-quit-scenarios", action="store_true", help="skip quitting while something loads")
    p.add_argument("--stress", type=int, default=0, help="busy-looping processes to run meanwhile (load)")
    p.add_argument("--before", default=None, help="also time quitting with the tui package of this git revision")
    args = p.parse_args(argv)
    if args.workspace is None:
        from bench._tui_workspace import build_workspace

        args.workspace = build_workspace().root
    ws = str(args.workspace.resolve())
    bindir = Path(sys.executable).parent
    capsearch = str(bindir / "capsearch") if (bindir / "capsearch").exists() else "capsearch"
    before = tree_of(args.before) if args.before else None
    stress = Stress(args.stress)
    try:
        time.sleep(3 if args.stress else 0)        # let the load average rise
        print(f"# {machine()}; {load_average()}" + (f"; {args.stress} busy processes running" if args.stress else ""))
        print(f"workspace {ws}; pty {COLS}x{ROWS}; {args.repeats} alternating runs each")
        if not args.no_start_up:
            start_up(ws, capsearch, args.repeats)
        if not args.no_quit_scenarios:
            quitting(ws, args.repeats, before)
        print(f"# at the end: {load_average()}")
    finally:
        stress.stop()
        if before is not None:
            shutil.rmtree(before, ignore_errors=True)
    loaded = subprocess.run([sys.executable, "-c", PROBE_APP, ws], capture_output=True, text=True,
                            timeout=120).stdout.strip()
    print(f"heavy modules imported by first paint: {loaded or 'none'} (checked: {', '.join(HEAVY)})")


if __name__ == "__main__":
    main()
