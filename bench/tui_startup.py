"""Time from ``capsearch tui`` to first paint (target: under 1.5 s), in a pseudo-terminal that answers like xterm.

Each command runs in a fresh pty (100x30, 10x20-pixel cells) whose reader answers the device-attributes
query (as xterm does: no sixel) and ignores the kitty-graphics query (as most terminals do, so the image
library waits its 0.1 s for it). Timed from the spawn:

* first paint: the screen bar ("1 Pipeline ...") is drawn;
* counts: the stage table shows the per-stage counts read from the store (in a worker, after the paint);
* quit: from pressing q to the process exiting.

The baseline is a minimal Textual app that draws one line (what importing Textual and starting it costs).
Also listed: whether torch, transformers, sentence-transformers or Prefect were imported by the time the
app first painted (they must not be).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from bench import alternating, load_average, machine

TARGET_S = 1.5
ROWS, COLS = 30, 100
DA1_QUERY, DA1_ANSWER = b"\x1b[c", b"\x1b[?62;22c"
MINIMAL_APP = ("from textual.app import App\nfrom textual.widgets import Static\n"
               "class A(App):\n    BINDINGS=[('q','quit')]\n    def compose(self):\n        yield Static('1 Pipeline')\n"
               "A().run()\n")
HEAVY = ("torch", "transformers", "sentence_transformers", "prefect", "open_clip")
PROBE_APP = ("import asyncio, sys\nfrom tui.app import CapsearchApp\n"
             "async def main():\n    app = CapsearchApp(sys.argv[1], image_mode='none')\n"
             "    async with app.run_test() as pilot:\n        await pilot.pause()\n"
             f"        print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
             "asyncio.run(main())\n")


def run_once(argv: list[str], first: bytes, counts: bytes | None, timeout: float = 60.0) -> dict[str, float]:
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
    env.pop("TMUX", None)
    fd, tty = pty.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, COLS * 10, ROWS * 20))
    t0 = time.perf_counter()
    # Popen, not pty.fork: this process has run torch (its threads) by now, and a forked copy of a process
    # that runs threads may hang; Popen's child runs no Python code before exec.
    proc = subprocess.Popen(argv, stdin=tty, stdout=tty, stderr=tty, env=env, start_new_session=True)
    os.close(tty)
    out, seen = b"", {}
    try:
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.01)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                if DA1_QUERY in chunk:
                    os.write(fd, DA1_ANSWER)
                out += chunk
            now = time.perf_counter()
            if "first" not in seen and first in out:
                seen["first"] = now - t0
            if counts is not None and "counts" not in seen and counts in out:
                seen["counts"] = now - t0
            if "first" in seen and (counts is None or "counts" in seen):
                break
        if "first" not in seen:
            raise RuntimeError(f"{argv[0]} drew nothing recognisable in {timeout:.0f} s: {out[-400:]!r}")
        t_quit = time.perf_counter()
        os.write(fd, b"q")
        while True:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    if not os.read(fd, 65536):
                        break
                except OSError:
                    break
            if proc.poll() is not None:
                break
            if time.perf_counter() - t_quit > 30:
                raise RuntimeError("the app did not quit within 30 s")
        seen["quit"] = time.perf_counter() - t_quit
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(fd)
    return seen


def summary(runs: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in runs if key in r]
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})" if values else "-"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", type=Path, default=None,
                   help="workspace to open (default: the TUI benchmark's 10k-photo workspace, built if missing)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.workspace is None:
        from bench._tui_workspace import build_workspace

        args.workspace = build_workspace().root
    ws = str(args.workspace)
    bindir = Path(sys.executable).parent
    capsearch = str(bindir / "capsearch") if (bindir / "capsearch").exists() else "capsearch"
    commands = {
        "minimal Textual app": ([sys.executable, "-c", MINIMAL_APP], None),
        "capsearch tui": ([capsearch, "--workspace", ws, "tui"], b"ingest"),
        "python -m tui": ([sys.executable, "-m", "tui", "--workspace", ws], b"ingest"),
    }
    for cmd, counts in commands.values():
        run_once(cmd, b"Pipeline", counts)        # warm the file cache
    # the three commands take turns (order reversed every other round), so a busy moment hits them alike
    results = alternating({name: (lambda cmd=cmd, counts=counts: run_once(cmd, b"Pipeline", counts))
                           for name, (cmd, counts) in commands.items()}, args.repeats)
    print(f"# {machine()}; {load_average()}")
    print(f"workspace {ws}; pty {COLS}x{ROWS}; {args.repeats} alternating runs each")
    base = statistics.median(r["first"] for r in results["minimal Textual app"])
    for name, runs in results.items():
        first = statistics.median(r["first"] for r in runs)
        line = f"{name:>20}: first paint {summary(runs, 'first')}"
        if name != "minimal Textual app":
            line += (f" = {first / base:.1f}x the minimal app; counts {summary(runs, 'counts')}; "
                     f"first paint {'under' if first < TARGET_S else 'OVER'} the {TARGET_S} s target")
        print(line + f"; quit {summary(runs, 'quit')}")
    loaded = subprocess.run([sys.executable, "-c", PROBE_APP, ws], capture_output=True, text=True,
                            timeout=120).stdout.strip()
    print(f"heavy modules imported by first paint: {loaded or 'none'} (checked: {', '.join(HEAVY)})")


if __name__ == "__main__":
    main()
