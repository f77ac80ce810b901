"""The same workspace gives the same evaluation, search results and neighbours under two BLAS kernels.

Each kernel runs in its own process (``OPENBLAS_CORETYPE`` is read when numpy loads its BLAS), on its own
copy of the text world (40 targets; several share a caption text, so their scores tie), through
``tests/kernel_probe.py``. Kernels block matrix products differently, so without identical scores for
identical vectors by construction, ties break differently and ranks, Recall@K and MedR move.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.blas import KERNELS
from tests.fixtures.text_worlds import text_world

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def probe_under(kernel: str, workspace: Path, out: Path) -> dict:
    env = {**os.environ, "OPENBLAS_CORETYPE": kernel}
    proc = subprocess.run([sys.executable, "-m", "tests.kernel_probe", str(workspace), str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"probe under {kernel} failed:\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[str, dict]:
    world = text_world()
    out = {}
    for kernel in KERNELS:
        root = tmp_path_factory.mktemp(f"kernel-{kernel}")
        shutil.copytree(world, root / "ws", ignore=shutil.ignore_patterns("logs"))
        out[kernel] = probe_under(kernel, root / "ws", root / "probe.json")
    cores = {kernel: p["blas_core"] for kernel, p in out.items()}
    if len(set(cores.values())) < len(KERNELS):
        pytest.skip(f"numpy's BLAS did not switch kernels here ({cores}): nothing to compare")
    return out


def _differences(a: list, b: list) -> list:
    return [(x, y) for x, y in zip(a, b) if x != y][:5]


def test_the_world_has_ties_to_break(probes):
    """Photos sharing a caption text tie: some true photo's expected rank is a half (a mid-rank)."""
    ranks = [r[3] for r in next(iter(probes.values()))["rankings"]]
    assert any(rank != int(rank) for rank in ranks)


def test_evaluation_metrics_and_ranks_are_identical(probes):
    a, b = (probes[k] for k in KERNELS)
    assert _differences(a["rankings"], b["rankings"]) == []
    assert a["evaluation"] == b["evaluation"]


def test_search_results_and_rank_of_are_identical(probes):
    a, b = (probes[k] for k in KERNELS)
    assert len(a["search"]) > 0
    assert _differences(a["search"], b["search"]) == []


def test_neighbours_of_duplicate_photos_are_identical(probes):
    a, b = (probes[k] for k in KERNELS)
    assert a["neighbours"] == b["neighbours"]
