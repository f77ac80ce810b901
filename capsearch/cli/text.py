"""Text commands: `embed-captions`, `queries`, `search`, `evaluate`, `report`."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from capsearch.cli import context as cli
from capsearch.cli.context import CaptionersOpt, JsonOpt, RetryOpt, WorkspaceOpt, console, progress_to_stderr

if TYPE_CHECKING:
    from pipeline.workspace import Workspace

def embed_captions(captioner: CaptionersOpt = None, workspace: WorkspaceOpt = None) -> None:
    """Embed the captions of the targets (each distinct caption text once) with the text embedder."""
    from capsearch.cli.execute import run_stages

    ws = cli.workspace(workspace)
    names = cli.resolve_captioners(ws.config, captioner)
    run_stages(ws, ["embed-captions"], captioners=names)
    cli.print_stage_counts(ws, ["embed-captions"], names)


def queries(workspace: WorkspaceOpt = None, retry_failed: RetryOpt = False) -> None:
    """Make the evaluation queries (short and detail) from each target's own held-out reference captions."""
    from capsearch.cli.execute import run_stages
    from pipeline.queries.openai_gen import usage_line

    ws = cli.workspace(workspace)
    outcome = run_stages(ws, ["queries"], retry_failed=retry_failed)
    cli.print_stage_counts(ws, ["queries"])
    usage = ws.store.get_meta("queries/last_run")
    if usage and outcome.ran_batches and ws.config.queries.generator == "openai":
        console.print(f"this run: {usage_line(usage)}", highlight=False)
    total = ws.store.get_meta(f"queries/usage/{_queries_hash(ws)}")
    if total:
        console.print(f"all runs of this configuration: {usage_line(total)}", highlight=False)
    failed = ws.store.queries(_queries_hash(ws), status="failed")
    if failed:
        console.print(f"[yellow]{len({q.image_id for q in failed})} targets have failed queries "
                      "(reasons: `capsearch status`); retry only those with `capsearch queries --retry-failed`[/]")


def _queries_hash(ws: "Workspace") -> str:
    from pipeline.stage_keys import stage_hash

    return stage_hash(ws, "queries")


def search(
    query: Annotated[Optional[str], typer.Argument(help="What to look for, e.g. \"a dog in the snow\".")] = None,
    by: Annotated[Optional[str], typer.Option(
        "--by", help="Method: captions, a captioner, clip, hybrid or oracle. clip and hybrid embed the query with the "
                     "image embedder's text tower (torch: a slower start); the others need no torch.")] = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many photos to list.")] = 10,
    scope: Annotated[Optional[str], typer.Option(
        "--scope", help="collection: every photo, by every caption it has (default: search.scope); targets: the "
                        "experiment's view, one caption per target photo.")] = None,
    like: Annotated[Optional[str], typer.Option(
        "--like", help="Find photos like this one: a photo id of the workspace, or any image file.")] = None,
    exact: Annotated[bool, typer.Option(
        "--exact", help="Score every photo, also past index.approximate_above photos (where search otherwise goes "
                        "through the approximate index).")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rank the photos for a text query (or by example, --like) and print the best ones with the caption that
    matched and which kind it is (human, a captioner's, or the image)."""
    from pipeline.errors import ConfigError
    from pipeline.search_service import SearchIndex

    if (query is None or not query.strip()) == (like is None):
        raise ConfigError("give a text query or --like PHOTO (one of the two)")
    ws = cli.workspace(workspace)
    if scope is None and by == "oracle":
        scope = "targets"           # the oracle exists only in the experiment's view
    index = SearchIndex(ws, scope=scope, preload_queries=like is None, exact=exact)
    if like is not None:
        _print_like(index, index.like(like, k), k, as_json)
        return
    method = by or index.default_method()
    hits = index.search(query, method, k)
    found = index.evaluation_query(query)
    truth = None
    if found is not None and found[0] in index.position:
        image_id, kind = found
        truth = {"image_id": image_id, "kind": kind, "rank": index.rank_of(query, method, image_id)}
    if as_json:
        print(json.dumps({"query": query, "method": method, "scope": index.scope, "k": k, "methods": index.methods(),
                          "approximate": index.approximated(method),
                          "hits": [h.__dict__ for h in hits], "evaluation_query": truth}, indent=2))
        return
    table = _hits_table(f"“{query}” by {method}, {_scope_words(index)}", hits,
                        truth["image_id"] if truth else None)
    console.print(table)
    if not hits:
        console.print("[yellow]no results[/]")
    if truth:
        console.print(f"evaluation query ({truth['kind']}) of {truth['image_id']}: "
                      f"{method} ranks it #{truth['rank']:g} of {len(index.photo_ids)}", highlight=False)
    console.print(f"[dim]methods: {', '.join(index.methods())}; scope {index.scope} (--scope "
                  f"{'targets' if index.scope == 'collection' else 'collection'} for the other)"
                  + (f"; through the approximate index (recall@10 {index.recall(method)}; --exact scores every photo)"
                     if index.approximated(method) else "") + "[/]")


def _scope_words(index) -> str:
    n = len(index.photo_ids)
    return f"{n} photos" if index.scope == "collection" else f"{n} target photos"


def _hits_table(title: str, hits, true_id: str | None):
    from rich.table import Table

    from pipeline.display import shorten_middle

    width = max(24, min(60, console.width * 2 // 5))
    table = Table("#", "score", "photo", "matched", "caption", title=title, title_justify="left",
                  header_style="bold")
    for h in hits:
        mark = " [green]← true photo[/]" if true_id and h.image_id == true_id else ""
        table.columns[2].no_wrap = True
        table.add_row(str(h.rank), f"{h.score:.3f}", shorten_middle(h.image_id, width) + mark, h.matched_label,
                      h.caption)
    return table


def _print_like(index, result, k: int, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"like": result.example, "photo": result.example_id, "scope": index.scope, "k": k,
                          "by_captions": result.by_captions, "hits": [h.__dict__ for h in result.hits]}, indent=2))
        return
    how = "image and caption similarity" if result.by_captions else "image similarity"
    console.print(_hits_table(f"photos like {result.example_id or result.example} by {how}, {_scope_words(index)}",
                              result.hits, None))
    if not result.hits:
        console.print("[yellow]no results[/]")


def evaluate(
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    baseline: Annotated[Optional[str], typer.Option(help="Method the others are compared with (default: evaluate.baseline).")] = None,
) -> None:
    """Recall@K, MRR and median rank per method and query kind, and the caption metrics (BLEU, METEOR, ROUGE-L,
    CIDEr-D, CLIPScore, copy rate...) per captioner, with CIs and a paired test against the baseline."""
    from capsearch.cli.execute import run_stages
    from capsearch.cli.summary import print_caption_metrics, print_evaluation
    from pipeline.caption_metrics.storage import load_caption_metrics
    from pipeline.reports.captions import caption_metrics_json
    from pipeline.errors import ConfigError
    from pipeline.evaluation import evaluation_plan, load_evaluation
    from pipeline.reports.tables import evaluation_json

    ws = cli.workspace(workspace)
    if baseline:
        plan = evaluation_plan(ws)
        if baseline not in plan.methods:
            raise ConfigError(f"baseline '{baseline}' is not an evaluated method; choose one of {', '.join(plan.methods)}")
        ws.config.evaluate.baseline = baseline
    with progress_to_stderr(as_json):
        run_stages(ws, ["caption-metrics", "evaluate"])
    reason = _not_applicable(ws, "evaluate")
    if reason:
        if as_json:
            print(json.dumps({"not_applicable": reason}, indent=2))
        else:
            console.print(f"[yellow]evaluation is not applicable to this workspace: {reason}[/]", highlight=False)
        return
    result = load_evaluation(ws)
    if result is None:
        from pipeline.errors import CapsearchError

        raise CapsearchError("the evaluation did not produce results (see `capsearch status`)")
    captions = load_caption_metrics(ws)
    if as_json:
        print(json.dumps(dict(evaluation_json(result), caption_metrics=caption_metrics_json(captions)), indent=2,
                         allow_nan=False))
    else:
        print_evaluation(result)
        print_caption_metrics(captions)


def report(workspace: WorkspaceOpt = None) -> None:
    """Write metrics.json/csv, PNG charts and a self-contained HTML page into <workspace>/reports/."""
    from capsearch.cli.execute import run_stages
    from capsearch.cli.summary import print_report_paths

    ws = cli.workspace(workspace)
    run_stages(ws, ["caption-metrics", "evaluate", "report"])
    reason = _not_applicable(ws, "report")
    if reason:
        console.print(f"[yellow]the report's metrics are not applicable to this workspace: {reason}[/]",
                      highlight=False)
        return
    print_report_paths(ws)


def _not_applicable(ws: "Workspace", name: str) -> str | None:
    from pipeline.stages.registry import build_stage

    return build_stage(ws, name).applicable()


def register(app: typer.Typer) -> None:
    app.command("embed-captions")(embed_captions)
    app.command("queries")(queries)
    app.command("search")(search)
    app.command("evaluate")(evaluate)
    app.command("report")(report)
