"""Run the benchmarks: ``python -m bench`` (all of them) or ``python -m bench NAME ...`` (module names)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import bench


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def run(argv: list[str]) -> int:
    names = argv or modules()
    unknown = sorted(set(names) - set(modules()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(modules())}", file=sys.stderr)
        return 2
    print(f"# {bench.machine()}")
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n## {name}", flush=True)
        main = module.main
        main([]) if inspect.signature(main).parameters else main()
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
