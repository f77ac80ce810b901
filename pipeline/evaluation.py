"""Evaluation: how well each method finds the true photo of every evaluation query.

For every enabled captioner, every available extra method (``evaluate.extra_methods``:
``clip``, ``hybrid``, ``oracle``; see ``search_service``) and every query kind, each query
ranks all target photos and the true photo's rank gives Recall@K (``evaluate.ks``), MRR and
the median rank (``pipeline.metrics``: expected values under random tie-breaking), with
percentile bootstrap intervals over queries and a paired bootstrap against
``evaluate.baseline`` on the same queries.

A target that a method cannot rank (its caption failed or came out empty) is *missing*: it
ranks below every scored photo, so its queries count as misses, never dropped; the number
of missing targets per method is stored and printed. A method whose *every* target is missing
(the oracle on a set with one caption per photo, a captioner whose every caption failed) has
nothing to rank: it is *not applicable*, with its reason (``not_applicable``), and gets no
value, no interval, no paired test and no rankings; a baseline that is not applicable gives
no paired test. Failed queries (the generator gave none) are not evaluated and are counted
separately.

Ties: photos whose captions are the same text (for ``clip``: the same image vector) get the
same score by construction (``pipeline.distinct``), on every CPU. A true photo tied with
others gets its expected rank under uniformly random tie-breaking (mid-rank: tied with one
other photo at the top, rank 1.5 and R@1 0.5), never a rank that depends on row order. The
stored top ids list tied photos by photo id, ascending, as search and the TUI do.

Evaluate embeds whatever it needs that is not stored yet: ok captions without a vector
(normally done by ``embed-captions``), the oracle's captions (the oracle has no
``embed-captions`` stage; its documents live in the same ``text/<key>/document`` space) and
the queries (``text/<key>/query``, ``clip-text/<key>``). Results go to the store under the
evaluate stage's configuration hash (the *eval hash*): per-query rankings (expected rank and
the top ``TOP_STORED`` ids and scores) and the metrics, plus a summary in store meta
``evaluation/<eval hash>``, all three in one transaction.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from pipeline.crashpoints import EVALUATE_RESULTS, crash_point
from pipeline.errors import CapsearchError
from pipeline.estimates import CONFIDENCE, Difference, Estimate, json_safe
from pipeline.hashing import hash_obj, hash_text
from pipeline.keys import clip_text_space, document_space, image_space, query_space, stage_key
from pipeline.metrics import RankBounds, evaluate_ranks, metric_names, paired_bootstrap, rank_bounds
from pipeline.progress import StageProgress
from pipeline.search import top_from_scores
from pipeline.store_rows import EvaluationRow, QueryRow
from pipeline.search_service import CLIP, HYBRID, ORACLE, ORACLE_RULE, SearchIndex, oracle_captions
from pipeline.snapshots import export_array
from pipeline.stage_keys import optional_stage_hash, stage_hash
from pipeline.text_vectors import text_vectors
from pipeline.workspace import Workspace

TOP_STORED = 10
VERSION = 2          # 2: a method none of whose targets can be ranked is not applicable (before: all tied last)
QUERY_CHUNK = 256
KIND_ORDER = ("short", "detail")


@dataclass
class EvaluationPlan:
    """What an evaluation covers: methods (name -> upstream identity) and the methods it must skip."""

    methods: dict[str, Any]
    skipped: dict[str, str]
    queries_hash: str
    kinds: list[str]


def evaluation_plan(ws: Workspace) -> EvaluationPlan:
    """Methods to evaluate under the current configuration, with the hashes of what each one reads."""
    from pipeline.text_models import build_clip_embedder, build_text_embedder

    cfg = ws.config
    text_key = build_text_embedder(cfg).key
    queries_hash = stage_hash(ws, "queries")
    methods: dict[str, Any] = {c: stage_hash(ws, "embed-captions", c) for c in cfg.enabled_captioners()}
    skipped: dict[str, str] = {}
    extras = cfg.evaluate.extra_methods
    clip = build_clip_embedder(cfg)
    if CLIP in extras or HYBRID in extras:
        if clip is None:
            reason = (f"image embedder '{cfg.image_embedder.name}' has no text tower; clip and hybrid need "
                      "image_embedder.name = \"open_clip\"")
            skipped.update({m: reason for m in (CLIP, HYBRID) if m in extras})
        else:
            clip_id = {"image_embedder": clip.key, "embed_images": optional_stage_hash(ws, "embed-images") or ""}
            if CLIP in extras:
                methods[CLIP] = clip_id
            if HYBRID in extras:
                hc = cfg.search.hybrid_captioner
                if hc in cfg.enabled_captioners():
                    methods[HYBRID] = {"captioner": hc, "captions": methods[hc], "clip": clip_id,
                                       "weight": cfg.search.hybrid_weight}
                else:
                    skipped[HYBRID] = f"search.hybrid_captioner '{hc}' is not an enabled captioner"
    if ORACLE in extras:
        methods[ORACLE] = {"queries": queries_hash, "text_embedder": text_key, "rule": ORACLE_RULE}
    kinds = [k for k in KIND_ORDER if k in cfg.queries.kinds]
    return EvaluationPlan(methods, skipped, queries_hash, kinds)


def input_fingerprint(ws: Workspace, plan: EvaluationPlan) -> str:
    """Hash of the content an evaluation reads: targets, caption texts and statuses, queries, image vectors."""
    from pipeline.text_models import build_clip_embedder

    store = ws.store
    targets = store.image_ids("target")
    target_set = set(targets)
    parts: dict[str, Any] = {"targets": hash_obj(targets)}
    for method in plan.methods:
        if method in (CLIP, HYBRID, ORACLE):
            continue
        rows = store.captions(method, stage_hash(ws, "caption", method))
        parts[method] = hash_obj(sorted((i, r.status, hash_text(r.text)) for i, r in rows.items() if i in target_set))
    queries = store.queries(plan.queries_hash)
    parts["queries"] = hash_obj([(q.image_id, q.kind, q.status, hash_text(q.text), q.source_caption_idx)
                                 for q in queries])
    if CLIP in plan.methods or HYBRID in plan.methods:
        clip = build_clip_embedder(ws.config)
        shas = [img.sha256 for img in store.images(split="target")]
        parts["images"] = hash_obj(sorted(store.has_vectors(image_space(clip.key), shas)))
    return hash_obj(parts)


def evaluation_config(ws: Workspace, plan: EvaluationPlan | None = None) -> dict[str, Any]:
    """The evaluate stage's configuration: every method's upstream hash, the queries, metric settings, inputs."""
    from pipeline.text_models import build_text_embedder

    plan = plan or evaluation_plan(ws)
    ev = ws.config.evaluate
    return {
        "methods": plan.methods, "skipped": sorted(plan.skipped), "queries": plan.queries_hash, "kinds": plan.kinds,
        "ks": sorted(set(ev.ks)), "n_boot": ev.n_boot, "seed": ev.seed, "confidence": CONFIDENCE,
        "baseline": ev.baseline, "top_stored": TOP_STORED, "version": VERSION,
        "text_embedder": build_text_embedder(ws.config).key,
        "inputs": input_fingerprint(ws, plan),
    }


def evaluation_hash(ws: Workspace) -> str:
    """The current configuration hash of the ``evaluate`` stage (the *eval hash* its results are stored under)."""
    return stage_key("evaluate", "", evaluation_config(ws))


# ---------------------------------------------------------------------------------------------- results

@dataclass
class MethodResult:
    method: str
    kind: str
    n_queries: int
    missing_targets: int
    metrics: dict[str, Estimate]                             # metric -> value with its interval
    vs_baseline: dict[str, Difference] | None = None         # metric -> the paired test against the baseline

    def difference(self, metric: str) -> Difference | None:
        return (self.vs_baseline or {}).get(metric)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MethodResult":
        data = dict(data)
        data["metrics"] = {m: Estimate.from_dict(e) for m, e in data.get("metrics", {}).items()}
        if data.get("vs_baseline") is not None:
            data["vs_baseline"] = {m: Difference.from_dict(d) for m, d in data["vs_baseline"].items()}
        return cls(**data)


@dataclass
class EvaluationResult:
    eval_hash: str
    queries_hash: str
    methods: list[str]
    kinds: list[str]
    metrics: list[str]
    baseline: str | None
    n_targets: int
    n_queries: dict[str, int]
    failed_queries: int
    missing: dict[str, int]
    skipped: dict[str, str]
    results: list[MethodResult] = field(default_factory=list)
    not_applicable: dict[str, str] = field(default_factory=dict)   # method -> why it has nothing to rank
    n_boot: int = 0
    confidence: float = CONFIDENCE
    created_at: float = 0.0
    seconds: float = 0.0

    def get(self, method: str, kind: str) -> MethodResult | None:
        return next((r for r in self.results if r.method == method and r.kind == kind), None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvaluationResult":
        data = dict(data)
        data["results"] = [MethodResult.from_dict(r) for r in data.get("results", [])]
        return cls(**data)


def _embed_documents(ws: Workspace, plan: EvaluationPlan, text_embedder: Any, say: Callable[..., None]) -> None:
    """Store a vector for every ok caption of the planned captioners and for the oracle's captions."""
    store = ws.store
    documents: list[str] = []
    for method in plan.methods:
        if method not in (CLIP, HYBRID, ORACLE):
            rows = store.captions(method, stage_hash(ws, "caption", method), status="ok")
            documents += [r.text for r in rows.values() if r.text.strip()]
    if ORACLE in plan.methods:
        documents += list(oracle_captions(store, store.image_ids("target"), plan.queries_hash).values())
    space = document_space(text_embedder.key)
    _, n_new = text_vectors(store, space, documents, text_embedder.embed_documents)
    if n_new:
        say(f"embedded {n_new} captions that had no vector yet")
    if documents:
        export_array(store, space)


Ranking = tuple[str, str, str, float, list[str], list[float]]


def _rank(index: SearchIndex, method: str, kind: str, rows: list[QueryRow], text_q: np.ndarray,
          clip_q: np.ndarray | None) -> tuple[RankBounds, list[Ranking]]:
    """Rank bounds of every query's true photo, and the stored rows (expected rank, top ids and scores)."""
    true = np.array([index.position[q.image_id] for q in rows], dtype=np.int64)
    better, tied, rankings = [], [], []
    for start in range(0, len(rows), QUERY_CHUNK):
        sl = slice(start, start + QUERY_CHUNK)
        scores = index.score_matrix(method, text_q[sl], clip_q[sl] if clip_q is not None else None)
        b = rank_bounds(scores, true[sl])
        better.append(b.better)
        tied.append(b.tied)
        top_idx, top_sc = top_from_scores(scores, TOP_STORED)
        for q, rank, ids, sc in zip(rows[sl], b.expected, top_idx, top_sc):
            keep = ids >= 0
            rankings.append((method, kind, q.image_id, float(rank), [index.target_ids[i] for i in ids[keep]],
                             [float(x) for x in sc[keep]]))
    return RankBounds(np.concatenate(better), np.concatenate(tied)), rankings


def _metric_rows(result: EvaluationResult, bounds: dict[tuple[str, str], RankBounds], ks: list[int],
                 n_boot: int, seed: int) -> list[EvaluationRow]:
    """Fill ``result.results`` with estimates and paired differences; return the rows for the store."""
    rows: list[EvaluationRow] = []
    for method in result.methods:
        for kind in result.kinds:
            b = bounds[(method, kind)]
            est = evaluate_ranks(b, ks, n_boot=n_boot, seed=seed, confidence=CONFIDENCE)
            diffs = None
            if result.baseline and method != result.baseline:
                diffs = paired_bootstrap(b, bounds[(result.baseline, kind)], ks, n_boot=n_boot, seed=seed,
                                         confidence=CONFIDENCE)
            result.results.append(MethodResult(method, kind, len(b), result.missing[method], dict(est.metrics), diffs))
            rows += [EvaluationRow(result.eval_hash, method, kind, name, est[name], len(b),
                                   result.baseline if diffs else None, diffs[name] if diffs else None)
                     for name in result.metrics]
    return rows


def run_evaluation(ws: Workspace, eval_hash: str, plan: EvaluationPlan | None = None,
                   progress: StageProgress | None = None) -> EvaluationResult:
    """Evaluate every planned method and query kind; store rankings, metrics and the summary."""
    from pipeline.text_models import build_clip_embedder, build_text_embedder

    t0 = time.perf_counter()
    cfg, store = ws.config, ws.store
    plan = plan or evaluation_plan(ws)
    ev = cfg.evaluate
    say = progress.message if progress else (lambda text, level="info": None)
    queries = [q for q in store.queries(plan.queries_hash) if q.kind in plan.kinds]
    ok_queries = [q for q in queries if q.status == "ok" and q.text.strip()]
    if not ok_queries:
        raise CapsearchError("no evaluation queries for the current configuration: run `capsearch queries` first")
    if not plan.methods:
        raise CapsearchError("nothing to evaluate: enable a captioner or an extra method (evaluate.extra_methods)")
    for method, reason in plan.skipped.items():
        say(f"{method} skipped: {reason}", "warning")

    text_embedder = build_text_embedder(cfg)
    _embed_documents(ws, plan, text_embedder, say)
    clip = build_clip_embedder(cfg) if (CLIP in plan.methods or HYBRID in plan.methods) else None
    # always exact: the evaluation measures captions, not the approximate index
    index = SearchIndex(ws, scope="targets", include_empty=True, text_embedder=text_embedder, clip_embedder=clip,
                        exact=True)
    n_targets = len(index.target_ids)
    missing = {m: index.missing(m) for m in plan.methods}
    not_applicable = {m: _nothing_to_rank(cfg, m, n_targets) for m, n in missing.items() if n_targets and n == n_targets}
    methods = [m for m in plan.methods if m not in not_applicable]
    result = EvaluationResult(
        eval_hash=eval_hash, queries_hash=plan.queries_hash, methods=methods, kinds=list(plan.kinds),
        metrics=metric_names(sorted(set(ev.ks))), baseline=ev.baseline if ev.baseline in methods else None,
        n_targets=n_targets, n_queries={}, failed_queries=len(queries) - len(ok_queries),
        missing=missing, skipped=dict(plan.skipped), n_boot=ev.n_boot,
        confidence=CONFIDENCE, created_at=time.time(), not_applicable=not_applicable,
    )
    for method, reason in not_applicable.items():
        say(f"{method} is not applicable: {reason}", "warning")
    for method in methods:
        if missing[method]:
            say(f"{method}: {missing[method]} of {n_targets} targets have no usable caption; they rank at the bottom",
                "warning")
    if ev.baseline in not_applicable:
        say(f"baseline '{ev.baseline}' is not applicable ({not_applicable[ev.baseline]}); no paired test", "warning")
    elif result.baseline is None:
        say(f"baseline '{ev.baseline}' is not among the evaluated methods; no paired test", "warning")
    if result.failed_queries:
        say(f"{result.failed_queries} queries failed to generate and are not evaluated "
            "(`capsearch queries --retry-failed`)", "warning")

    rankings: list[Ranking] = []
    bounds: dict[tuple[str, str], RankBounds] = {}
    for kind in plan.kinds:
        rows = [q for q in ok_queries if q.kind == kind and q.image_id in index.position]
        if not rows:
            raise CapsearchError(f"no {kind} query was generated for the current targets: "
                                 "run `capsearch queries --retry-failed` (or drop the kind from queries.kinds)")
        result.n_queries[kind] = len(rows)
        texts = [q.text for q in rows]
        text_q = text_vectors(store, query_space(text_embedder.key), texts, text_embedder.embed_queries)[0]
        clip_q = text_vectors(store, clip_text_space(clip.key), texts, clip.embed_texts)[0] if clip else None
        for method in plan.methods:
            if method in methods:
                bounds[(method, kind)], ranked = _rank(index, method, kind, rows, text_q, clip_q)
                rankings += ranked
            if progress:
                progress.advance(1)

    metric_rows = _metric_rows(result, bounds, sorted(set(ev.ks)), ev.n_boot, ev.seed)
    result.seconds = time.perf_counter() - t0
    with store.transaction():   # rankings, metrics and summary: one evaluation, committed together
        store.put_rankings(eval_hash, rankings)
        crash_point(EVALUATE_RESULTS)
        store.put_evaluations(eval_hash, metric_rows)
        store.set_meta(f"evaluation/{eval_hash}", json_safe(result.as_dict()))
    return result


def _nothing_to_rank(cfg: Any, method: str, n_targets: int) -> str:
    """Why a method none of whose targets can be ranked is not applicable, in one line."""
    if method == ORACLE:
        return (f"none of the {n_targets} targets has a human caption other than the one its queries were made "
                "from, so the oracle has nothing to search (a set with one caption per photo)")
    if method == CLIP:
        return f"none of the {n_targets} targets has an image vector (run embed-images)"
    if method == HYBRID:
        return (f"none of the {n_targets} targets has both an image vector and a usable "
                f"{cfg.search.hybrid_captioner} caption")
    return f"none of the {n_targets} targets has a usable {method} caption (failed, empty or not written)"


def load_evaluation(ws: Workspace, eval_hash: str | None = None) -> EvaluationResult | None:
    """A stored evaluation: the given hash, else the current configuration's, else None."""
    store = ws.store
    if eval_hash is None:
        eval_hash = current_eval_hash(ws)
    if eval_hash is None:
        return None
    data = store.get_meta(f"evaluation/{eval_hash}")
    if data is None or (data.get("results") and not store.evaluations(eval_hash)):
        return None
    return EvaluationResult.from_dict(data)


def current_eval_hash(ws: Workspace) -> str | None:
    try:
        return evaluation_hash(ws)
    except CapsearchError:
        return None


def latest_evaluation(ws: Workspace) -> tuple[EvaluationResult | None, bool]:
    """(evaluation, stale): the current configuration's, else the newest stored one marked stale."""
    current = load_evaluation(ws)
    if current is not None:
        return current, False
    latest = ws.store.latest_eval_hash()
    if latest is None:
        return None, False
    found = load_evaluation(ws, latest)
    return found, found is not None
