"""Vision commands: `embed-images`, `neighbours`, `prompts`, `caption`, and `models pull`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from capsearch.cli import context as cli
from capsearch.cli.context import CaptionersOpt, RetryOpt, WorkspaceOpt, console

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.workspace import Workspace

def _run(ws: "Workspace", names: list[str], captioners: list[str] | None = None, retry_failed: bool = False) -> None:
    from capsearch.cli.execute import run_stages

    run_stages(ws, names, captioners=captioners, retry_failed=retry_failed)
    cli.print_stage_counts(ws, names, captioners)


def embed_images(workspace: WorkspaceOpt = None, retry_failed: RetryOpt = False) -> None:
    """Embed every photo (reference DB and targets) with the configured image embedder."""
    _run(cli.ingested_workspace(workspace), ["embed-images"], retry_failed=retry_failed)


def neighbours(workspace: WorkspaceOpt = None, retry_failed: RetryOpt = False) -> None:
    """For every target, find the k most similar reference-DB photos (targets are never neighbours)."""
    _run(cli.ingested_workspace(workspace), ["neighbours"], retry_failed=retry_failed)


def prompts(workspace: WorkspaceOpt = None, retry_failed: RetryOpt = False) -> None:
    """Write each target's prompt: its neighbours' captions in the template, fitted to the VLM's context."""
    _run(cli.ingested_workspace(workspace), ["prompts"], retry_failed=retry_failed)


def caption(captioner: CaptionersOpt = None, workspace: WorkspaceOpt = None, retry_failed: RetryOpt = False) -> None:
    """Caption the targets with one or more captioners (run `neighbours` and `prompts` first)."""
    ws = cli.ingested_workspace(workspace)
    _run(ws, ["caption"], captioners=cli.resolve_captioners(ws.config, captioner), retry_failed=retry_failed)


def models_to_pull(cfg: "Config") -> tuple[list[str], list[str]]:
    """(model ids, notes) for every model the configuration names: image embedder, enabled captioners, text embedder."""
    from pipeline.captioners.registry import captioner_models_to_pull
    from pipeline.embedders.registry import embedder_models_to_pull
    from pipeline.errors import ModelLoadError
    from pipeline.text_embedding import resolve_model_path

    ids, notes = embedder_models_to_pull(cfg)
    ids += captioner_models_to_pull(cfg)
    try:
        ids.append(resolve_model_path(cfg.text_embedder.model))
    except ModelLoadError as exc:
        notes.append(str(exc))
    return list(dict.fromkeys(ids)), notes


def models_pull(
    models: Annotated[Optional[list[str]], typer.Argument(
        help="Hub names or local paths (default: every model the workspace's profile names).", show_default=False)] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Download models into the Hugging Face cache, so later runs work with HF_HUB_OFFLINE=1."""
    from capsearch.cli.progress import rich_progress
    from pipeline.models.pull import pull_models

    notes: list[str] = []
    if not models:
        ws = cli.workspace(workspace, must_exist=False)   # reads the configuration only
        models, notes = models_to_pull(ws.config)
        console.print(f"profile {ws.config.profile}: {len(models)} models", highlight=False)
    for note in notes:
        console.print(f"[yellow]{note}[/]", highlight=False)
    if not models:
        return
    with rich_progress() as progress:
        # the bar shows progress; each model's outcome is listed once, below
        results = pull_models(models, lambda event: None if event.kind == "message" else progress(event))
    for r in results:
        colour = {"failed": "red", "downloaded": "green"}.get(r.status, "cyan")
        detail = r.error if r.status == "failed" else r.path if r.path != r.model_id else ""
        detail = f": {detail}" if detail else ""
        console.print(f"[{colour}]{r.status:<10}[/] {r.model_id}{detail}", highlight=False, soft_wrap=True)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        console.print(f"[red]{len(failed)} of {len(results)} models could not be fetched[/]", highlight=False)
        raise typer.Exit(1)
    console.print(f"{len(results)} models ready; later runs can set HF_HUB_OFFLINE=1", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("embed-images")(embed_images)
    app.command("neighbours")(neighbours)
    app.command("prompts")(prompts)
    app.command("caption")(caption)
    models_app = typer.Typer(help="Model weights: fetch them ahead into the Hugging Face cache.", no_args_is_help=True)
    models_app.command("pull")(models_pull)
    app.add_typer(models_app, name="models")
