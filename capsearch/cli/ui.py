"""``capsearch tui``: the terminal UI (Textual is imported only when the command runs)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from capsearch.cli import context as cli
from capsearch.cli.context import WorkspaceOpt


def register(app: typer.Typer) -> None:
    @app.command()
    def tui(
        workspace: WorkspaceOpt = None,
        images: Annotated[Optional[str], typer.Option(
            help="How photos are drawn: auto, halfcell, unicode or none (default: half-blocks under tmux).")] = None,
    ) -> None:
        """Open the terminal UI: run stages with live progress, browse captions and prompts, search, evaluate."""
        from pipeline.errors import ConfigError
        from tui.launch import main

        if images is not None and images not in ("auto", "halfcell", "unicode", "none"):
            raise ConfigError(f"--images must be auto, halfcell, unicode or none, not '{images}'")
        main(cli.workspace(workspace).root, image_mode=images)   # ends the process at once when the app closes
