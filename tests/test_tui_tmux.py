"""The TUI in a real terminal: tests/tui_tmux.sh drives it in tmux and captures the pane at each step."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None,
                       reason="tmux is not installed (apt-get install tmux): the real-terminal test needs it"),
]
SCRIPT = Path(__file__).with_name("tui_tmux.sh")
# What Prefect, Dask or uvicorn print when their output reaches a terminal.
LIBRARY_OUTPUT = re.compile(r"\| (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\||Starting temporary server|distributed\.|"
                            r"Uvicorn running|Traceback \(most recent call last\)|Loading weights")


def prefect_server_env(request) -> dict[str, str]:
    """The session's Prefect test server for the app's run (it then need not start a temporary one)."""
    try:
        request.getfixturevalue("prefect_harness")
    except pytest.FixtureLookupError:
        return {}
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return {"PREFECT_API_URL": url} if url else {}


def test_tui_in_tmux_by_keyboard(tui_workspace, tmp_path, request):
    ws = tmp_path / "ws"
    shutil.copytree(tui_workspace.root, ws, ignore=shutil.ignore_patterns("logs"))
    out = tmp_path / "captures"
    env = {**os.environ, **prefect_server_env(request)}
    proc = subprocess.run(["bash", str(SCRIPT), str(ws), str(out), sys.executable], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).parents[1], env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    captures = {p.stem.split("-", 1)[1]: p.read_text() for p in sorted(out.glob("*.txt"))}

    store = tui_workspace.store
    first = store.image_ids("target")[0]
    assert first in captures["photo"]
    assert store.reference_captions([first])[first][0][:40] in captures["photo"]
    assert "oracle" in captures["search-oracle"]
    assert "run completed" in captures["run"]
    for name, text in captures.items():
        assert not LIBRARY_OUTPUT.search(text), f"library output on the screen at step {name}:\n{text}"
    log = ws / "logs" / "tui.log"
    assert log.exists(), "library output goes to the workspace's log file"
