"""Starting the TUI stays cheap: no model or orchestration library is imported until a run or a search needs it."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "sentence_transformers", "open_clip", "prefect", "distributed")
PROBE = f"""
import asyncio, sys
import capsearch.cli.app                      # what `capsearch tui` imports first
from tui.app import CapsearchApp
from tui.screens.pipeline import StatusLoaded

async def main():
    seen = []
    # without the search index the app otherwise starts loading in a background thread as it opens (that
    # imports the text model's libraries on purpose): what the screens themselves import is measured here
    app = CapsearchApp(sys.argv[1], image_mode="halfcell", preload_search=False)
    async with app.run_test(message_hook=seen.append) as pilot:
        painted = [m for m in {HEAVY!r} if m in sys.modules]
        while not any(isinstance(m, StatusLoaded) for m in seen):
            await pilot.pause(0.05)
        await pilot.press("2")
        await pilot.pause(0.5)
        browsing = [m for m in {HEAVY!r} if m in sys.modules]
    print(",".join(painted) + "|" + ",".join(browsing))

asyncio.run(main())
"""


def test_pipeline_and_captions_screens_import_no_model_or_orchestration_library(tui_workspace):
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tui_workspace.root)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    painted, browsing = proc.stdout.strip().splitlines()[-1].split("|")
    assert painted == "", f"imported before the first paint: {painted}"
    assert browsing == "", f"imported by the counts and the photo list: {browsing}"
