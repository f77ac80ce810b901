"""One self-contained HTML page per evaluation: metrics table, charts, and sampled queries with the
top results of every method as inline thumbnails (no external files, scripts or fonts)."""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from pipeline.estimates import Difference, Estimate
from pipeline.evaluation import KIND_ORDER, EvaluationResult
from pipeline.metric_facts import DASH, Verdict, fact, metric_cell

THUMB_SIZE = (150, 112)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;margin:0;background:#f6f7f9}
main{max-width:1320px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:34px 0 10px;border-bottom:1px solid #d8dde3;padding-bottom:4px}
.meta{color:#55606d;margin:0 0 3px} .meta b{color:#1d2733}
.note{background:#fff6e0;border:1px solid #f0d58c;border-radius:6px;padding:7px 11px;margin:10px 0;color:#5a4500}
table.metrics{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001;font-variant-numeric:tabular-nums}
table.metrics th,table.metrics td{padding:6px 12px;border-bottom:1px solid #e6e9ed;text-align:right;vertical-align:top}
table.metrics th{background:#eef1f4;font-weight:600} table.metrics td.name,table.metrics th.name{text-align:left}
table.metrics tr.first td{border-top:2px solid #cfd5dc}
.ci{display:block;color:#7a8590;font-size:11.5px} .d{display:block;font-size:11.5px;color:#7a8590}
.d.up{color:#127a3a;font-weight:600} .d.down{color:#b3261e;font-weight:600}
.best{font-weight:700} .miss{color:#b3261e} tr.na td[colspan]{text-align:left;color:#7a8590}
.charts{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.charts img{max-width:100%;background:#fff;border:1px solid #e0e4e8;border-radius:6px}
section.q{background:#fff;border:1px solid #e0e4e8;border-radius:8px;padding:12px 16px 6px;margin:0 0 18px}
section.q h3{margin:0 0 8px;font-size:16px} .kind{font-size:11px;text-transform:uppercase;letter-spacing:.06em;
background:#e8edf3;color:#3b4a5a;border-radius:4px;padding:2px 6px;margin-left:8px;vertical-align:2px}
.truth{display:flex;gap:12px;align-items:center;margin:0 0 10px;color:#55606d}
.truth .ph{border-color:#1f9d55;width:112px;height:84px}
table.res{border-collapse:collapse;width:100%} table.res td{vertical-align:top;padding:6px 6px 10px}
table.res td.m{width:150px;font-weight:600;padding-top:10px} .rank{display:block;font-weight:400;font-size:12px;color:#55606d}
.rank.hit{color:#127a3a;font-weight:600} .rank.lost{color:#b3261e}
figure{margin:0;width:156px} .ph{border:3px solid transparent;border-radius:4px;width:150px;height:112px;
background:#e4e7eb center/cover no-repeat} figure.true .ph{border-color:#1f9d55}
.ph.none::after{content:"no photo";display:block;padding:44px 0;text-align:center;color:#7a8590;font-size:12px}
figcaption{font-size:11.5px;color:#3b4a5a;margin-top:3px;line-height:1.3;overflow-wrap:anywhere}
figcaption .n{color:#7a8590;font-variant-numeric:tabular-nums} figure.true figcaption .n{color:#127a3a;font-weight:700}
.cells{display:flex;gap:8px;flex-wrap:wrap} .gap{align-self:center;color:#7a8590;font-size:18px;padding:0 2px}
footer{margin-top:40px;color:#7a8590;font-size:12px}
"""


@dataclass
class SampleResult:
    method: str
    rank: float | None                       # expected rank of the true photo (None: not ranked)
    top: list[tuple[str, float, str]]        # (image id, score, caption)
    true_caption: str = ""                   # the method's caption of the true photo


@dataclass
class Sample:
    image_id: str
    kind: str
    query: str
    results: list[SampleResult] = field(default_factory=list)


class Thumbnails:
    """Base64 JPEG thumbnails of the workspace's photos, each embedded once in the page's stylesheet (a photo
    shown by several methods costs its bytes once) and referenced by a CSS class."""

    def __init__(self, paths: dict[str, Path], size: tuple[int, int] = THUMB_SIZE):
        self.paths = paths
        self.size = size
        self._classes: dict[str, str | None] = {}
        self._rules: list[str] = []

    def css_class(self, image_id: str) -> str | None:
        """The class that shows this photo (None when its file cannot be read)."""
        if image_id not in self._classes:
            url = self._make(image_id)
            name = f"p{len(self._rules)}" if url else None
            if url:
                self._rules.append(f".{name}{{background-image:url({url})}}")
            self._classes[image_id] = name
        return self._classes[image_id]

    def html(self, image_id: str, css: str = "ph") -> str:
        name = self.css_class(image_id)
        label = escape(image_id) + ("" if name else " (photo not found)")
        return f'<div class="{css} {name or "none"}" role="img" aria-label="{label}" title="{escape(image_id)}"></div>'

    def stylesheet(self) -> str:
        return "\n".join(self._rules)

    def _make(self, image_id: str) -> str | None:
        from PIL import Image

        path = self.paths.get(image_id)
        if path is None:
            return None
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((self.size[0] * 3 // 2, self.size[1] * 3 // 2))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=78)
        except Exception:  # an unreadable photo is shown as a grey box with its name
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def format_rank(rank: float | None) -> str:
    if rank is None or math.isnan(rank):
        return DASH
    return f"{int(rank)}" if float(rank).is_integer() else f"{rank:.1f}"


def estimate_html(metric: str, estimate: Estimate | None, difference: Difference | None = None,
                  baseline: str | None = None, best: bool = False) -> str:
    """A table cell of the report: the value (bold where ``best``), its interval, and Δ against the baseline with
    its p-value (green / red where significantly better / worse; its interval in the tooltip)."""
    cell = metric_cell(metric, estimate, difference)
    if cell is None:
        return DASH
    text = f'<span class="best">{cell.value}</span>' if best else cell.value
    if cell.interval:
        text += f'<span class="ci">{cell.interval}</span>'
    if cell.compared:
        cls = {Verdict.BETTER: "up", Verdict.WORSE: "down"}.get(cell.verdict, "")
        title = f"difference to {baseline or 'the baseline'}" + (f" with {cell.delta_interval}" if cell.delta_low else "")
        text += f'<span class="d {cls}" title="{escape(title)}">{escape(cell.compared)}</span>'
    return text


def metrics_table(result: EvaluationResult) -> str:
    head = "".join(f"<th>{escape(m)}</th>" for m in result.metrics)
    rows = []
    for kind in result.kinds:
        found = [r for method in result.methods if (r := result.get(method, kind)) is not None]
        best = {m: fact(m).best([r.metrics[m].value for r in found if m in r.metrics]) for m in result.metrics}
        for n, method in enumerate(result.methods):
            r = result.get(method, kind)
            cells = []
            for metric in result.metrics:
                e = r.metrics.get(metric) if r else None
                top = e is not None and best[metric] is not None and e.value == best[metric]
                cells.append(f"<td>{estimate_html(metric, e, r.difference(metric) if r else None, result.baseline, top)}"
                             "</td>")
            missing = result.missing.get(method, 0)
            name = escape(method) + (" <small>(baseline)</small>" if method == result.baseline else "")
            rows.append(
                f'<tr class="{"first" if n == 0 else ""}"><td class="name">{escape(kind)}</td><td class="name">{name}</td>'
                f'<td>{r.n_queries if r else 0}</td>{"".join(cells)}'
                f'<td class="{"miss" if missing else ""}">{missing}</td></tr>')
        for method, reason in result.not_applicable.items():     # nothing to rank: no value, interval or test
            rows.append(f'<tr class="na"><td class="name">{escape(kind)}</td><td class="name">{escape(method)}</td>'
                        f'<td>{DASH}</td><td colspan="{len(result.metrics)}">not applicable: {escape(reason)}</td>'
                        f'<td class="miss">{result.missing.get(method, 0)}</td></tr>')
    return (f'<table class="metrics"><thead><tr><th class="name">queries</th><th class="name">method</th><th>n</th>{head}'
            f'<th title="targets without a usable caption: ranked last">missing</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _figure(thumbs: Thumbnails, image_id: str, caption: str, label: str, true: bool) -> str:
    cap = escape(caption) if caption else "<i>no caption</i>"
    return (f'<figure class="{"true" if true else ""}">{thumbs.html(image_id)}'
            f'<figcaption><span class="n">{escape(label)}</span> {cap}</figcaption></figure>')


def sample_section(sample: Sample, thumbs: Thumbnails, true_caption: str) -> str:
    rows = []
    for res in sample.results:
        cells = []
        found = False
        for pos, (image_id, score, caption) in enumerate(res.top, start=1):
            true = image_id == sample.image_id
            found |= true
            cells.append(_figure(thumbs, image_id, caption, f"#{pos} · {score:.3f}", true))
        rank_text = format_rank(res.rank)
        if res.rank is not None and not found:
            cells.append('<span class="gap">…</span>')
            cells.append(_figure(thumbs, sample.image_id, res.true_caption, f"true photo at #{rank_text}", True))
        cls = "hit" if found else "lost"
        where = f"true photo at #{rank_text}" if res.rank is not None else "not ranked"
        rows.append(f'<tr><td class="m">{escape(res.method)}<span class="rank {cls}">{where}</span></td>'
                    f'<td><div class="cells">{"".join(cells)}</div></td></tr>')
    return (f'<section class="q"><h3>“{escape(sample.query)}”<span class="kind">{escape(sample.kind)}</span></h3>'
            f'<div class="truth">{thumbs.html(sample.image_id)}'
            f'<div>true photo <b>{escape(sample.image_id)}</b><br><small>its reference captions: {escape(true_caption)}</small></div></div>'
            f'<table class="res">{"".join(rows)}</table></section>')


def render_page(result: EvaluationResult, *, workspace: str, charts: dict[str, bytes], samples: list[Sample],
                thumbs: Thumbnails, true_captions: dict[str, str], caption_section: str = "") -> str:
    created = _dt.datetime.fromtimestamp(result.created_at or 0).strftime("%Y-%m-%d %H:%M")
    queries = ", ".join(f"{n} {k}" for k, n in result.n_queries.items())
    notes = []
    for method, reason in result.not_applicable.items():
        notes.append(f"<div class=note><b>{escape(method)}</b> is not applicable: {escape(reason)}; it has no "
                     "value, interval or paired test.</div>")
    for method, reason in result.skipped.items():
        notes.append(f"<div class=note><b>{escape(method)}</b> was not evaluated: {escape(reason)}</div>")
    for method in result.methods:
        if result.missing.get(method):
            notes.append(f"<div class=note><b>{escape(method)}</b>: {result.missing[method]} of {result.n_targets} "
                         "targets have no usable caption; their queries rank them last (counted as misses).</div>")
    if result.failed_queries:
        notes.append(f"<div class=note>{result.failed_queries} queries failed to generate and are not evaluated.</div>")
    chart_html = "".join(f'<img src="{png_data_url(data)}" alt="{escape(name)}">' for name, data in charts.items())
    sections = "".join(sample_section(s, thumbs, true_captions.get(s.image_id, "")) for s in samples)
    baseline = escape(result.baseline) if result.baseline else "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="capsearch-eval-hash" content="{escape(result.eval_hash)}">
<title>capsearch report · {escape(Path(workspace).name)} · {escape(result.eval_hash)}</title><style>{CSS}</style>
<style>{thumbs.stylesheet()}</style></head>
<body><main>
<h1>Which captioner makes text search find the right photo?</h1>
<p class="meta">workspace <b>{escape(workspace)}</b> · evaluation <b>{escape(result.eval_hash)}</b> · {created}</p>
<p class="meta"><b>{result.n_targets}</b> target photos · queries: <b>{escape(queries)}</b> · baseline <b>{baseline}</b> ·
{round(result.confidence * 100)}% bootstrap intervals ({result.n_boot} resamples) · ranks are expected ranks under random tie-breaking</p>
{"".join(notes)}
<h2>Metrics</h2>
<p class="meta">Each cell: value, [confidence interval], and Δ against the baseline on the same queries with its paired-bootstrap p-value
(green / red: significantly better / worse at p &lt; 0.05). Bold: best per query kind. MedR: median rank, lower is better.</p>
{metrics_table(result)}
<h2>Charts</h2><div class="charts">{chart_html}</div>
{caption_section}
<h2>Sample queries</h2>
<p class="meta">{len(samples)} queries drawn deterministically. For every method: its top results with the method's caption of each
photo and the cosine score; the true photo has a green frame, and when it is not among the top results it is shown at its rank.</p>
{sections}
<footer>made by capsearch · self-contained page (thumbnails and charts are embedded)</footer>
</main></body></html>
"""


def choose_samples(pairs: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """``n`` (image id, kind) pairs chosen by a hash of each pair, alternating query kinds (deterministic)."""
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for image_id, kind in pairs:
        by_kind.setdefault(kind, []).append((image_id, kind))
    for items in by_kind.values():
        items.sort(key=lambda p: hashlib.sha256(f"report:{p[0]}/{p[1]}".encode("utf-8")).hexdigest())
    order = sorted(by_kind, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k))
    out: list[tuple[str, str]] = []
    while len(out) < n and any(by_kind.values()):
        for kind in order:
            if by_kind[kind] and len(out) < n:
                out.append(by_kind[kind].pop(0))
    return out
