"""Vision commands: `embed-images`, `neighbours`, `prompts`, `caption`, and `models pull`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from capsearch.cli import context as ctx
from capsearch.cli.context import WorkspaceOpt, console

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.workspace import Workspace

RetryOpt = Annotated[bool, typer.Option("--retry-failed", help="Compute failed items again (otherwise they are skipped).")]
CaptionerOpt = Annotated[
    Optional[list[str]],
    typer.Option("--captioner", "-c", show_default=False,
                 help="Captioner to run (repeatable); `all` (the default) runs every enabled one."),
]


def _ingested(workspace: WorkspaceOpt) -> "Workspace":
    from pipeline.errors import StoreError

    ws = ctx.workspace(workspace)
    if not ws.exists or ws.store.count_images() == 0:
        raise StoreError(f"no photos in the workspace {ws.root}: run `capsearch data demo`, "
                         "`capsearch data flickr8k` or `capsearch data folder PATH` first")
    return ws


def _run(ws: "Workspace", names: list[str], captioners: list[str] | None = None, retry_failed: bool = False) -> None:
    from capsearch.cli.execute import run_stages
    from pipeline.stages.registry import pipeline_stages

    run_stages(ws, names, captioners=captioners, retry_failed=retry_failed)
    for stage in pipeline_stages(ws, names, captioners):
        c = stage.counts()
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


def embed_images(workspace: WorkspaceOpt = None, retry_failed: RetryOpt = False) -> None:
    """Embed every photo (reference DB and targets) with the configured image embedder."""
    _run(_ingested(workspace), ["embed-images"], retry_failed=retry_failed)


def neighbours(workspace: WorkspaceOpt = None, retry_failed: RetryOpt = False) -> None:
    """For every target, find the k most similar reference-DB photos (targets are never neighbours)."""
    _run(_ingested(workspace), ["neighbours"], retry_failed=retry_failed)


def prompts(workspace: WorkspaceOpt = None, retry_failed: RetryOpt = False) -> None:
    """Write each target's prompt: its neighbours' captions in the template, fitted to the VLM's context."""
    _run(_ingested(workspace), ["prompts"], retry_failed=retry_failed)


def caption(captioner: CaptionerOpt = None, workspace: WorkspaceOpt = None, retry_failed: RetryOpt = False) -> None:
    """Caption the targets with one or more captioners (run `neighbours` and `prompts` first)."""
    ws = _ingested(workspace)
    _run(ws, ["caption"], captioners=resolve_captioners(ws.config, captioner), retry_failed=retry_failed)


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
        ws = ctx.workspace(workspace)
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
