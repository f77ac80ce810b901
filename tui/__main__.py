"""``python -m tui [--workspace PATH]``: the same as ``capsearch tui``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui", description="The capsearch terminal UI.")
    parser.add_argument("--workspace", "-w", type=Path, default=None,
                        help="workspace folder (default outputs/default; env CAPSEARCH_WORKSPACE)")
    parser.add_argument("--images", choices=("auto", "halfcell", "unicode", "none"), default=None,
                        help="how photos are drawn (default: half-blocks under tmux, else the best available)")
    args = parser.parse_args(argv)
    from pipeline.errors import CapsearchError
    from tui.launch import main as run

    try:
        run(args.workspace, image_mode=args.images)     # ends the process when the app closes
    except CapsearchError as exc:   # e.g. no workspace at that path: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
