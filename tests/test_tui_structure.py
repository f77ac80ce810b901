"""The TUI's modules import one way: no circle between the app and its screens, counting every import (at module
level, inside functions, and for type checking only), and the list of screens is kept in one place."""
from __future__ import annotations

import ast
from pathlib import Path

import tui

TUI = Path(tui.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(TUI.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tui_imports() -> dict[str, set[str]]:
    """Every tui module and the tui modules it imports anywhere in its source."""
    modules = {_module_name(p): p for p in TUI.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (each once, as a path that comes back to its start)."""
    out, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                out.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return out


def test_no_import_circle_in_the_tui_and_no_screen_imports_the_app():
    graph = tui_imports()
    assert "tui.app" in graph and any(m.startswith("tui.screens.") for m in graph)
    assert cycles(graph) == []
    importers_of_app = sorted(m for m, targets in graph.items() if "tui.app" in targets)
    assert importers_of_app == ["tui.launch"], importers_of_app


def test_the_screens_are_listed_once_and_every_part_of_the_app_reads_that_list():
    from tui import registry
    from tui.app import CapsearchApp
    from tui.screens.help import help_sections
    from tui.widgets.nav import NavBar

    assert [e.key for e in registry.MODES] == ["1", "2", "3", "4", "5"]
    assert set(CapsearchApp.MODES) == {e.name for e in registry.MODES}
    app_keys = {b.key: b.action for b in CapsearchApp.BINDINGS}
    for entry in registry.MODES:
        assert app_keys[entry.key] == f"switch_screen_mode('{entry.name}')"
        assert f"{entry.key} {entry.title}" in NavBar._text("").plain
    titles = [title.strip() for title, _, _ in help_sections(CapsearchApp.BINDINGS)]
    assert titles == ["Everywhere"] + [f"{e.key} {e.title}".strip() for e in registry.SCREENS]
    for entry in registry.SCREENS:
        assert entry.load().HELP, f"{entry.name} has no help paragraph"
