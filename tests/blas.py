"""Which BLAS kernel numpy runs, and which one to compare it with.

numpy's OpenBLAS picks a kernel for the CPU at start-up; ``OPENBLAS_CORETYPE`` (read once, when the
library loads) forces another one. Kernels block matrix products differently, so the same product can
differ in its last bits: the tests that must give the same results on every machine run under two of
them (the Makefile's ``test`` target runs the ranking tests again under ``second_kernel()``; the
evaluation is compared across kernels in subprocesses by ``tests/test_kernel_independence.py``).

``python -m tests.blas`` prints the kernel to use for the second run: Haswell, or Sandybridge where
Haswell is what the machine runs anyway.
"""
from __future__ import annotations

KERNELS = ("Sandybridge", "Haswell")


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
