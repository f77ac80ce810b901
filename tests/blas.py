"""Which BLAS kernel numpy runs, and which one to compare it with.

numpy's OpenBLAS picks a kernel for the CPU at start-up; ``OPENBLAS_CORETYPE`` (read once, when the
library loads) forces another one. Kernels block matrix products differently, so the same product can
differ in its last bits: the tests that must give the same results on every machine run under two of
them (``tests/test_second_kernel.py`` runs ``RANKING_TESTS`` again under ``second_kernel()`` in a pytest
process of their own; the evaluation is compared across kernels in subprocesses by
``tests/test_kernel_independence.py``). The session's header names the kernel it runs (tests/conftest.py).

``python -m tests.blas`` prints the kernel to use for the second run: Haswell, or Sandybridge where
Haswell is what the machine runs anyway.
"""
from __future__ import annotations

KERNELS = ("Sandybridge", "Haswell")
# the tests whose rankings, metrics and tie order must not depend on the CPU's kernel
RANKING_TESTS = ("tests/test_distinct.py", "tests/test_search_core.py", "tests/test_metrics.py",
                 "tests/test_neighbours.py", "tests/test_search_service.py", "tests/test_evaluation.py")


def blas_core() -> str:
    """The kernel numpy's OpenBLAS runs in this process ('' when numpy does not use OpenBLAS)."""
    import numpy  # noqa: F401 - loads the BLAS library threadpoolctl inspects
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("internal_api") == "openblas":
            return str(lib.get("architecture") or "")
    return ""


def second_kernel(current: str | None = None) -> str:
    """A kernel other than ``current`` (default: this process's) for a second test run."""
    current = blas_core() if current is None else current
    return "Sandybridge" if current.lower() == "haswell" else "Haswell"


if __name__ == "__main__":
    print(second_kernel())
