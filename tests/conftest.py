"""Shared pytest set-up, and how `make test` spreads the suite over pytest-xdist workers.

Every module in tests/fixtures/ is loaded as a pytest plugin, so fixture modules
can be added without editing this file.

Under xdist (``make test`` runs ``pytest -n N --dist loadgroup``) a module's tests stay together on one worker,
so its module-scoped fixtures (a world run through the pipeline, a model server) are built once; a module
marked ``spread`` (tests that each start their own processes and share nothing) is dealt out test by test; an
explicit ``xdist_group`` mark puts tests of several modules on one worker. Modules with a ``slow`` test go to
the workers first, so the long end-to-end tests never start last and leave one worker running alone.
Session fixtures (the Prefect test server, tiny models, the demo world) are built once per worker.

Every process the session starts carries its session tag, and a watcher stops them all if the session dies
without ending (``tests/reaper.py``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.environment import quiet_defaults

# Offline and quiet, before anything imports transformers, huggingface_hub or prefect.
quiet_defaults(offline=True)

_FIXTURES = Path(__file__).parent / "fixtures"
# Fixture modules import helpers from one another (tests.fixtures.text_worlds uses workspaces): rewrite their
# asserts whichever of them is imported first.
pytest.register_assert_rewrite("tests.fixtures")
pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in _FIXTURES.glob("*.py") if p.stem != "__init__"
)


_REAPER = pytest.StashKey[tuple]()


@pytest.hookimpl(tryfirst=True)      # before anything starts a process (xdist starts its workers later)
def pytest_configure(config: pytest.Config) -> None:
    from tests import reaper

    config.stash[_REAPER] = reaper.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    from tests import reaper

    if _REAPER in config.stash:
        reaper.finish(*config.stash[_REAPER])


def pytest_report_header(config: pytest.Config) -> str:
    from tests.blas import blas_core

    return f"BLAS kernel: {blas_core() or 'not OpenBLAS'}"


TIMELINE_VAR = "CAPSEARCH_TEST_TIMELINE"     # a folder: each process writes when each test ran (bench/suite_time.py)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    folder = os.environ.get(TIMELINE_VAR)
    if not folder:
        yield
        return
    import json
    import resource
    import time

    def cpu() -> float:     # this process's CPU seconds, and those of the children it has waited for
        return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))

    start, cpu_start = time.time(), cpu()
    yield
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    line = {"worker": worker, "test": item.nodeid, "start": start, "end": time.time(), "cpu": cpu() - cpu_start}
    with open(Path(folder) / f"{worker}.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


@pytest.hookimpl(tryfirst=True)      # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    for module, its in modules.items():
        for item in its:
            if item.get_closest_marker("xdist_group") is None and item.get_closest_marker("spread") is None:
                item.add_marker(pytest.mark.xdist_group(Path(module).stem))
    # slow modules first (stable: every worker collects the same order, as xdist requires)
    order = sorted(modules, key=lambda m: not any(i.get_closest_marker("slow") for i in modules[m]))
    items[:] = [item for module in order for item in modules[module]]
