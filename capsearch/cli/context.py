"""Shared CLI plumbing: the workspace option, console, and error printing."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, Optional

import typer
from rich.console import Console

from pipeline.workspace import Workspace, default_workspace_path

if TYPE_CHECKING:
    from pipeline.config import Config

console = Console()
err_console = Console(stderr=True)

WorkspaceOpt = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", help="Workspace folder (default outputs/default; env CAPSEARCH_WORKSPACE).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
RetryOpt = Annotated[bool, typer.Option("--retry-failed", help="Compute failed items again (otherwise they are skipped).")]
CaptionersOpt = Annotated[
    Optional[list[str]],
    typer.Option("--captioner", "-c", show_default=False,
                 help="Captioner (repeatable or comma-separated); `all` or nothing: every enabled one."),
]

_state: dict[str, object] = {"workspace": None, "debug": False}


def set_global(workspace: Path | None, debug: bool) -> None:
    _state["workspace"] = workspace
    _state["debug"] = debug


def is_debug() -> bool:
    """``--debug``, else ``cli.debug`` of the workspace's configuration (``CAPSEARCH_CLI__DEBUG`` or the older
    ``CAPSEARCH_DEBUG``); when that configuration is what failed, the environment alone decides."""
    if _state["debug"]:
        return True
    from pipeline.config import CliConfig, env_overrides, load_config

    chosen = _state["workspace"]
    try:
        return load_config(Workspace(chosen if chosen is not None else default_workspace_path()).config_path).cli.debug
    except Exception:  # noqa: BLE001 - the configuration itself is broken: read the environment alone
        try:
            return CliConfig.model_validate(env_overrides().get("cli", {})).debug
        except Exception:  # noqa: BLE001
            return False


def workspace(option: Path | None = None, *, must_exist: bool = True) -> Workspace:
    """The workspace named on the command, else on the root command, else the default.

    It must exist (a clear error otherwise, and nothing is created at a mistyped path) unless the
    command creates workspaces (`init`, `data ...`, `demo`) or only reads the configuration."""
    chosen = option or _state["workspace"]
    ws = Workspace(chosen if chosen is not None else default_workspace_path())
    return ws.require() if must_exist else ws


def ingested_workspace(option: Path | None = None) -> Workspace:
    """The workspace, which must hold ingested photos (a clear error says how to add some)."""
    from pipeline.errors import StoreError

    ws = workspace(option)
    if not ws.exists or ws.store.count_images() == 0:
        raise StoreError(f"no photos in the workspace {ws.root}: run `capsearch data demo`, "
                         "`capsearch data flickr8k` or `capsearch data folder PATH` first")
    return ws


def print_stage_counts(ws: Workspace, names: list[str], captioners: list[str] | None = None) -> None:
    """One line per stage: done of total, failed and missing."""
    from pipeline.stages.registry import pipeline_stages

    for stage in pipeline_stages(ws, names, captioners):
        c = stage.counts()
        if c.not_applicable:
            console.print(f"{c.stage}: not applicable: {c.not_applicable}", highlight=False)
            continue
        failed = f", [red]{c.failed} failed[/]" if c.failed else ""
        missing = f", [yellow]{c.missing} missing[/]" if c.missing else ""
        console.print(f"{c.stage}: {c.done} of {c.total} done{failed}{missing}", highlight=False)


def resolve_captioners(cfg: "Config", requested: list[str] | None) -> list[str]:
    """Captioner names in the order asked, `all` expanded to every enabled one; unknown names are an error."""
    from pipeline.errors import ConfigError

    names: list[str] = []
    for name in requested or ["all"]:
        for part in (p.strip() for p in name.split(",")):
            expanded = cfg.enabled_captioners() if part == "all" else [part] if part else []
            names += [n for n in expanded if n not in names]
    if not names:
        raise ConfigError("no captioner is enabled: set captioners.enabled in capsearch.toml or name one with --captioner")
    for name in names:
        cfg.captioner(name)  # a clear error listing the configured ones
    return names


@contextmanager
def progress_to_stderr(enabled: bool) -> Iterator[None]:
    """Keep stdout clean for --json: progress bars and notes go to stderr meanwhile."""
    if not enabled:
        yield
        return
    saved = getattr(console, "_file", None)      # None: follow sys.stdout, whatever it is at the time
    console.file = sys.stderr
    try:
        yield
    finally:
        console.file = saved  # type: ignore[assignment]
