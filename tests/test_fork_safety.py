"""embed-images through the Prefect flow never forks and never hangs, even while other threads hold import locks.

The run happens in a process of its own (tests/fixtures/embed_stress.py) so that a hang can be ended:
past the timeout its whole process group is killed and the test fails. Before decoding moved to
threads, every run of it hung (DataLoader workers forked from a task thread waited forever for an
import lock held by another thread of the parent); the stress process also fails on any fork at all.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.datasets.demo import generate_demo_world

pytestmark = pytest.mark.slow

N_IMAGES = 72   # three embed-images batches, two of them in flight at once
RUNS = 5        # flow runs in one process, a fresh workspace each
TIMEOUT = 300   # seconds for every run together (one takes a few seconds)


def test_embed_images_flow_never_forks_nor_hangs_while_threads_hold_import_locks(tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    world = tmp_path / "world"
    generate_demo_world(world, n_images=N_IMAGES, seed=7)
    env = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.embed_stress", str(world), str(tmp_path / "runs"),
         "--images", str(N_IMAGES), "--runs", str(RUNS)],
        cwd=Path(__file__).parents[1], env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the stress process and anything it started
        out, _ = proc.communicate()
        pytest.fail(f"embed-images hung: killed after {TIMEOUT} s\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    assert out.count(f"{N_IMAGES} photos embedded in 3 batches, no fork") == RUNS, out[-3000:]
