"""Commands cost what their work costs: a run or a stage with nothing to compute says so without Prefect, a
Prefect server or a model library, and is recorded like any run; importing ``flows`` changes nothing; the TUI and
the CLI reach Prefect only through ``flows``.

The commands run as a user starts them (``shell_env``: no Prefect server configured, the test's process tag), and
report which of the heavy libraries they imported when they exit. Speed itself is measured by
``bench/cli_latency.py``, never by a test.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.api import run
from pipeline.datasets.demo import generate_demo_world
from pipeline.runs import recent_runs
from tests.fixtures.commands import REPO
from tests.fixtures.flow_stages import demo_data
from tests.fixtures.workspaces import make_workspace

HEAVY = ("prefect", "torch", "transformers", "open_clip", "sentence_transformers")
MODULES_FILE = "CAPSEARCH_TEST_MODULES_FILE"
# `capsearch ARGS` with the stop signals at their defaults (as a terminal starts it), writing the heavy modules it
# imported to $CAPSEARCH_TEST_MODULES_FILE when it exits.
PROBE = ("import atexit, os, signal, sys\n"
         "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP): signal.signal(s, signal.SIG_DFL)\n"
         f"HEAVY = {HEAVY!r}\n"
         "def report():\n"
         "    with open(os.environ['" + MODULES_FILE + "'], 'w') as out:\n"
         "        out.write('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)))\n"
         "atexit.register(report)\n"
         "from capsearch.cli import main\n"
         "main(sys.argv[1:])\n")
N_IMAGES = 24


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fast-world")
    generate_demo_world(root, n_images=N_IMAGES, seed=3)
    return root


def capsearch(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`capsearch ARGS` as its own process: what it printed, and the heavy modules it had imported at exit."""
    modules = tmp_path / "modules.txt"
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, env={**env, MODULES_FILE: str(modules)},
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return done, [m for m in modules.read_text().split("\n") if m] if modules.exists() else ["(no report)"]


def test_a_run_with_nothing_to_compute_needs_no_prefect_and_is_recorded(small_world, tmp_path, prefect_harness,
                                                                        shell_env, process_tag):
    ws = make_workspace(tmp_path / "ws", data={**demo_data(small_world, 8), "demo_images": N_IMAGES})
    assert run(ws).status == "completed"
    done, heavy = capsearch(shell_env, tmp_path, "-w", str(ws.root), "run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing to compute: 11 stages up to date" in done.stdout, done.stdout
    assert heavy == [], f"a run with nothing to compute imported {heavy}"
    assert process_tag.tagged() == [], "it started no process (no Prefect server)"
    [noop] = recent_runs(ws.store, 1)
    assert (noop.status, noop.what, noop.flow_run_id) == ("completed", "every stage", "")
    stage_runs = [r for r in ws.store.stage_runs(limit=50) if r.run_id == noop.id]
    assert len(stage_runs) == 11 and {r.status for r in stage_runs} <= {"completed", "not applicable"}


def test_a_stage_with_nothing_to_compute_loads_no_model(small_world, tmp_path, prefect_harness, shell_env,
                                                        process_tag, tiny_open_clip):
    ws = make_workspace(tmp_path / "ws", data={**demo_data(small_world, 8), "demo_images": N_IMAGES},
                        image_embedder={"name": "open_clip", "model": tiny_open_clip.model,
                                        "pretrained": f"local-dir:{tiny_open_clip.local_dir}", "num_workers": 0},
                        runtime={"device": "cpu"})
    assert run(ws, ["ingest", "embed-images"]).stage("embed-images").done == N_IMAGES
    done, heavy = capsearch(shell_env, tmp_path, "-w", str(ws.root), "embed-images")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing to compute" in done.stdout and f"embed-images: {N_IMAGES} of {N_IMAGES} done" in done.stdout
    assert heavy == [], f"embed-images with nothing to do imported {heavy}"
    assert process_tag.tagged() == []


def test_importing_flows_changes_nothing(tmp_path):
    """No environment variable set, no file written, no port probed, no Prefect imported: the entry points
    apply the settings (``flows.runtime.settings.apply_settings``)."""
    import socket

    from flows.runtime.settings import ServerRecord, write_server_record

    home = tmp_path / "home"
    with socket.socket() as listener:                 # a `capsearch server` as its record says: counts connections
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        write_server_record(ServerRecord(f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}", os.getpid(),
                                         "127.0.0.1", port), home / ".prefect")
        modules = ["flows", "flows.api", "flows.run_path", "flows.plan", "flows.workspace_run", "flows.run_context"] + [
            f"flows.runtime.{p.stem}" for p in (REPO / "flows" / "runtime").glob("*.py") if p.stem != "__init__"]
        script = ("import os, sys; before = dict(os.environ)\n"
                  f"for name in {modules!r}: __import__(name)\n"
                  "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
                  "assert 'prefect' not in sys.modules\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(CAPSEARCH_HOME=str(home), PYTHONPATH=str(REPO))
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        with pytest.raises(socket.timeout):
            listener.accept()
    assert sorted(p.name for p in home.rglob("*")) == [".prefect", "capsearch-server.json"], "nothing was written"


def _prefect_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    return [n for n in names if n.split(".")[0] in ("prefect", "prefect_dask")]


def test_the_tui_and_the_cli_reach_prefect_only_through_flows():
    found = {str(p.relative_to(REPO)): _prefect_imports(p) for folder in ("tui", "capsearch")
             for p in (REPO / folder).rglob("*.py")}
    assert {path: names for path, names in found.items() if names} == {}


def test_prefects_private_sync_flag_is_passed_in_one_place():
    """``_sync=True`` (Prefect's private switch for its dual sync/async methods) only inside the one helper."""
    users = [str(p.relative_to(REPO)) for p in (REPO / "flows").rglob("*.py") if "_sync=True" in p.read_text()]
    assert users == ["flows/runtime/prefect_api.py"]
