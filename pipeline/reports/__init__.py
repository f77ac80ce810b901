"""Reports of an evaluation in ``<workspace>/reports/``: ``metrics.json``, ``metrics.csv``, PNG charts, and a
self-contained HTML page ``report-<eval hash>.html`` (also copied to the stable ``index.html``).

Every file is replaced atomically (``pipeline.atomic``): a reader, or a crash, sees the old file or the new one."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.evaluation import EvaluationResult
from pipeline.progress import StageProgress
from pipeline.store_rows import RankingRow
from pipeline.workspace import Workspace


@dataclass
class ReportPaths:
    json: Path
    csv: Path
    charts: list[Path] = field(default_factory=list)
    html: Path | None = None
    index: Path | None = None

    def all(self) -> list[Path]:
        return [self.json, self.csv, *self.charts, *(p for p in (self.html, self.index) if p is not None)]


def _photo_paths(ws: Workspace) -> dict[str, Path]:
    root = (ws.store.get_meta("collection") or {}).get("root")
    if not root:
        return {}
    return {img.id: Path(root) / img.path for img in ws.store.images()}


def build_samples(ws: Workspace, result: EvaluationResult, n: int, top: int):
    """The report's sample queries with every method's top results (deterministic choice)."""
    from pipeline.reports.html import Sample, SampleResult, choose_samples
    from pipeline.search_service import SearchIndex

    store = ws.store
    texts = {(q.image_id, q.kind): q.text for q in store.queries(result.queries_hash, status="ok")}
    rankings: dict[tuple[str, str, str], RankingRow] = {}
    for row in store.rankings(result.eval_hash):
        rankings[(row.method, row.query_kind, row.image_id)] = row
    pairs = sorted({(i, k) for (_, k, i) in rankings if (i, k) in texts})
    index = SearchIndex(ws, scope="targets", include_empty=True, exact=True)
    samples = []
    for image_id, kind in choose_samples(pairs, n):
        sample = Sample(image_id, kind, texts[(image_id, kind)])
        for method in result.methods:
            row = rankings.get((method, kind, image_id))
            if row is None:
                continue
            top_rows = [(i, s, index.caption(method, i)) for i, s in zip(row.top_ids[:top], row.top_scores[:top])]
            sample.results.append(SampleResult(method, float(row.rank), top_rows, index.caption(method, image_id)))
        samples.append(sample)
    return samples


def write_report(ws: Workspace, result: EvaluationResult, progress: StageProgress | None = None,
                 usage: list[dict[str, Any]] | None = None) -> ReportPaths:
    """Write every report file for one evaluation and return their paths; ``usage``: what the endpoint captioners'
    requests cost (``pipeline.stages.text.caption_usage``)."""
    from pipeline.reports.charts import mrr_chart, recall_chart
    from pipeline.reports.captions import caption_report
    from pipeline.reports.html import Thumbnails, render_page
    from pipeline.atomic import write_text
    from pipeline.reports.tables import write_metrics_csv, write_metrics_json
    from pipeline.reports.usage import usage_section

    out = ws.reports_dir
    out.mkdir(parents=True, exist_ok=True)
    captions = caption_report(ws, result, out / "caption_metrics.png")
    usage = usage or []
    paths = ReportPaths(write_metrics_json(result, out / "metrics.json", captions.json, usage),
                        write_metrics_csv(result, out / "metrics.csv", captions.records))
    charts = {"Recall@K": recall_chart(result, out / "recall_at_k.png"), "MRR": mrr_chart(result, out / "mrr.png")}
    paths.charts = [out / "recall_at_k.png", out / "mrr.png"] + ([captions.chart_path] if captions.chart_path else [])
    cfg = ws.config.report
    samples = build_samples(ws, result, cfg.sample_queries, cfg.top)
    refs = ws.store.reference_captions([s.image_id for s in samples])
    true_captions = {i: " / ".join(c) for i, c in refs.items()}
    page = render_page(result, workspace=str(ws.root), charts=charts, samples=samples,
                       thumbs=Thumbnails(_photo_paths(ws)), true_captions=true_captions,
                       caption_section=captions.html + usage_section(usage))
    paths.html = out / f"report-{result.eval_hash}.html"
    paths.index = out / "index.html"
    for target in (paths.html, paths.index):
        write_text(target, page)
    return paths
