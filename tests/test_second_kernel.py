"""The ranking tests once more under a second BLAS kernel, in a pytest process of their own.

``OPENBLAS_CORETYPE`` is read once, when numpy loads its BLAS, so the second kernel needs a new process:
this test starts one (serial, its own temporary folder) on ``tests.blas.RANKING_TESTS`` under
``second_kernel()``, and fails with that run's failures. It runs inside the suite, beside the other tests,
instead of as a second phase of ``make test`` after them, so the two kernels' runs share the machine's cores.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.blas import RANKING_TESTS, blas_core, second_kernel

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# what the outer run's worker says about itself, which the inner run must not take for its own
_OUTER = ("PYTEST_XDIST_", "PYTEST_CURRENT_TEST", "OPENBLAS_CORETYPE", "CAPSEARCH_TEST_TIMELINE")


def test_the_ranking_tests_pass_under_a_second_blas_kernel(tmp_path):
    if not blas_core():
        pytest.skip("numpy does not run OpenBLAS here: there is no second kernel to choose")
    kernel = second_kernel()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUTER)}
    env["OPENBLAS_CORETYPE"] = kernel
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "--basetemp",
                           str(tmp_path / "basetemp"), *RANKING_TESTS], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the ranking tests under the {kernel} kernel:\n{out[-8000:]}"
    assert f"BLAS kernel: {kernel}" in out, f"the inner run did not run the {kernel} kernel:\n{out[:3000]}"
    ran = re.search(r"(\d+) passed", out)
    assert ran and int(ran.group(1)) >= len(RANKING_TESTS), out[-3000:]
