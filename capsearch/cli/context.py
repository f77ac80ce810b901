"""Shared CLI plumbing: the workspace option, console, and error printing."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from pipeline.workspace import Workspace, default_workspace_path

console = Console()
err_console = Console(stderr=True)

WorkspaceOpt = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", help="Workspace folder (default outputs/default; env CAPSEARCH_WORKSPACE).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]

_state: dict[str, object] = {"workspace": None, "debug": False}


def set_global(workspace: Path | None, debug: bool) -> None:
    _state["workspace"] = workspace
    _state["debug"] = debug


def is_debug() -> bool:
    return bool(_state["debug"]) or os.environ.get("CAPSEARCH_DEBUG") == "1"


def workspace(option: Path | None = None) -> Workspace:
    """The workspace named on the command, else on the root command, else the default."""
    chosen = option or _state["workspace"]
    return Workspace(chosen if chosen is not None else default_workspace_path())
