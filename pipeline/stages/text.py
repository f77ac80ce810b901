"""The text side of the pipeline: embed-captions, queries, evaluate, report.

* ``embed-captions:<captioner>`` embeds the captioner's ok captions (of every photo it captioned)
  into ``text/<embedder key>/document``, keyed by ``hash_text(caption)``: a caption text is embedded
  once, whichever captioner wrote it and however often the stage runs. ``embed-captions:human``
  embeds every photo's human (reference) captions into the same space, for searching the whole
  collection. The oracle's documents are embedded by ``evaluate`` (usually already there).
* ``queries`` makes ``queries.kinds`` queries per target from its own held-out reference captions
  (reference or OpenAI-compatible generator); each target's queries are recorded with the captions
  they came from, so edited captions make new queries; failures are stored with their reason and
  retried only with ``--retry-failed``; token use and estimated cost go to store meta ``queries/usage``.
* ``queries``, ``evaluate``, ``caption-metrics`` and ``report`` are not applicable where the targets
  have no held-out captions (a person's collection: its uncaptioned photos are the targets).
* ``evaluate`` and ``report`` each run as one batch (see ``pipeline.evaluation``, ``pipeline.reports``).
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

from pipeline.backends import QueryRequest, QueryResult
from pipeline.compute.jobs import BatchJob, BatchPayload
from pipeline.compute.texts import TextsIn, TextsOut
from pipeline.crashpoints import EMBED_CAPTIONS_BATCH, QUERIES_BATCH, REPORT_FILES, crash_point
from pipeline.errors import CapsearchError
from pipeline.hashing import hash_obj, hash_text
from pipeline.progress import StageProgress
from pipeline.keys import HUMAN, document_space
from pipeline.queries.openai_gen import estimate_cost, summarise_usage, usage_line
from pipeline.snapshots import export_array
from pipeline.applicability import no_held_out_captions, no_human_caption
from pipeline.stages.base import Batch, BatchResult, PreparedBatch, Stage
from pipeline.stages.vision import CaptionStage, collection_root, photo_location
from pipeline.store_rows import QueryRow
from pipeline.text_vectors import store_new
from pipeline.workspace import Workspace

REPORT_VERSION = 1
USAGE_FIELDS = ("requests", "failures", "prompt_tokens", "completion_tokens")


class _WholeStage(Stage):
    """A stage that always recomputes all of its items together (one batch)."""

    batched = False

    def applicable(self) -> str | None:
        return no_held_out_captions(self.store)

    def settled_items(self, retry_failed: bool = False) -> set[str]:
        done = self.done_items()
        return done if done >= set(self.items()) else set()

    def item_fingerprints(self, ids: list[str]) -> dict[str, str]:
        return {i: "" for i in ids}


class EmbedCaptionsStage(Stage):
    name = "embed-captions"
    cheap = True
    compute = "pipeline.compute.texts:embed_texts"

    def __init__(self, ws, variant: str = ""):
        super().__init__(ws, variant)
        if not variant:
            raise CapsearchError("embed-captions needs a captioner (embed-captions:<captioner>)")
        from pipeline.text_models import build_text_embedder

        self.embedder = build_text_embedder(self.cfg)
        self.space = document_space(self.embedder.key)

    def caption_hash(self) -> str:
        return self.keys.caption_hash(self.variant)

    def applicable(self) -> str | None:
        if self.variant == HUMAN:
            return no_human_caption(self.store)
        return CaptionStage(self.ws, self.variant).applicable()

    def config(self) -> dict[str, Any]:
        return self.keys.embed_captions(self.variant)

    def _captions(self, only: Sequence[str] | None = None) -> dict[str, list[str]]:
        """Photo -> the caption texts to embed: its human captions, or the captioner's ok caption of it
        (of the photos ``only``, when given: a batch reads its own rows, not the collection's)."""
        ids = set(self.store.image_ids()) if only is None else {r.id for r in self.store.images(ids=only)}
        if self.variant == HUMAN:
            return {i: [t for t in caps if t.strip()] for i, caps in self.store.reference_captions(only).items()
                    if i in ids and any(t.strip() for t in caps)}
        rows = self.store.captions(self.variant, self.caption_hash(), ids=only, status="ok")
        return {i: [r.text] for i, r in rows.items() if i in ids and r.text.strip()}

    def items(self) -> list[str]:
        return sorted(self._captions())

    def done_items(self) -> set[str]:
        captions = self._captions()
        present = self.store.has_vectors(self.space, sorted({hash_text(t) for ts in captions.values() for t in ts}))
        return {i for i, ts in captions.items() if all(hash_text(t) in present for t in ts)}

    def item_fingerprints(self, ids: list[str]) -> dict[str, str]:
        captions = self._captions()
        return {i: hash_obj([hash_text(t) for t in captions.get(i, [])]) for i in ids}

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        return self.run_split(batch, progress)

    def prepare_batch(self, batch: Batch, progress: StageProgress | None = None,
                      send_photos: bool = False) -> PreparedBatch:
        """The batch's caption texts the store has no vector for, each distinct text once."""
        captions = self._captions(batch.ids)
        texts = [t for i in batch.ids for t in captions.get(i, [])]
        present = self.store.has_vectors(self.space, [hash_text(t) for t in texts])
        todo = tuple(dict.fromkeys(t for t in texts if hash_text(t) not in present))
        return PreparedBatch(batch, BatchJob(self.compute_ref(), batch.index, TextsIn(todo)), captions)

    def commit_payload(self, prepared: PreparedBatch, payload: BatchPayload,
                       progress: StageProgress | None = None) -> BatchResult:
        batch, captions = prepared.batch, prepared.local
        out: TextsOut = payload.output
        with self.commit(EMBED_CAPTIONS_BATCH):
            n_new = store_new(self.store, self.space, out.chunks)
        gone = sum(1 for i in batch.ids if i not in captions)
        if progress:
            if gone:
                progress.message(f"{gone} captions changed since the plan was made; run again", "warning")
            progress.advance(len(batch.ids))
        return BatchResult(done=len(batch.ids) - gone, skipped=gone,
                           messages=[f"{n_new} new caption embeddings"] if n_new else [])

    def finalize(self, progress: StageProgress | None = None) -> None:
        if self.store.has_space(self.space):
            export_array(self.store, self.space)
            from pipeline.search_service import CAPTIONS, prepare_search_indexes

            prepare_search_indexes(self.ws, [CAPTIONS], (lambda m: progress.message(m, "info")) if progress else None)
        self._export_query_encoder(progress)

    def _export_query_encoder(self, progress: StageProgress | None) -> None:
        """Export the text embedder for search's light query encoder (once per model: ``pipeline.query_encoder``)
        while this process may have the model loaded anyway; a failure is a warning, never the stage's."""
        if not self.cfg.text_embedder.light_queries:
            return
        from pipeline.query_encoder import encoder_folder
        from pipeline.query_export import ensure_exported, export_state

        folder = encoder_folder(self.cfg, self.embedder.key)
        if export_state(folder, self.embedder.key) != "missing":
            return
        say = progress.message if progress else (lambda text, level="info": None)
        try:
            if ensure_exported(self.embedder, folder, on_notice=lambda text: say(text, "warning")) == "ready":
                say(f"exported the text embedder for fast search to {folder}")
        except OSError as exc:
            say(f"could not export the text embedder for fast search to {folder}: {exc}", "warning")


class QueriesStage(Stage):
    name = "queries"

    def __init__(self, ws, variant: str = ""):
        super().__init__(ws, variant)
        self.network = self.cfg.queries.generator == "openai"   # network stages are retried by the flows
        self.cheap = not self.network                              # reference queries cost microseconds
        self._generator: Any = None
        self._run = dict.fromkeys(USAGE_FIELDS, 0)
        self._lock = threading.Lock()

    def kinds(self) -> list[str]:
        return self.keys.query_kinds()

    def applicable(self) -> str | None:
        return no_held_out_captions(self.store)

    def config(self) -> dict[str, Any]:
        return self.keys.queries()

    def _references(self) -> dict[str, list[str]]:
        return self.store.reference_captions(split="target")

    def items(self) -> list[str]:
        return sorted(self._references())

    def _rows(self) -> list[QueryRow]:
        return self.store.queries(self.config_hash())

    def done_items(self) -> set[str]:
        kinds = set(self.kinds())
        ok: dict[str, set[str]] = {}
        for r in self._rows():
            if r.status == "ok":
                ok.setdefault(r.image_id, set()).add(r.kind)
        return self.fresh({i for i, got in ok.items() if kinds <= got} & set(self.items()))

    def failed_items(self) -> dict[str, str]:
        failed = {r.image_id: r.error or "failed" for r in self._rows() if r.status == "failed"}
        current = self.fresh(set(failed) & set(self.items()))
        return {i: reason for i, reason in failed.items() if i in current}

    def item_fingerprints(self, ids: list[str]) -> dict[str, str]:
        refs = self._references()
        return {i: hash_obj(refs.get(i, [])) for i in ids}

    def generator(self) -> Any:
        """The query generator, built by the first batch that needs it (planning a run never builds one)."""
        with self._lock:
            if self._generator is None:
                from pipeline.text_models import build_query_generator

                self._generator = build_query_generator(self.cfg)
            return self._generator

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        generator = self.generator()
        refs = self.store.reference_captions(list(batch.ids))
        paths = {r.id: r.path for r in self.store.images(ids=list(batch.ids))}
        root = collection_root(self.store)
        requests = [QueryRequest(i, photo_location(root, paths.get(i, i)), refs.get(i, [])) for i in batch.ids]
        kinds = self.kinds()
        results: list[QueryResult] = generator.generate(requests, kinds)
        rows = []
        for res in results:
            for n, kind in enumerate(kinds):
                failed = res.error is not None or not res.queries.get(kind)
                rows.append({
                    "image_id": res.image_id, "kind": kind, "generator": generator.name,
                    "text": "" if failed else res.queries[kind], "status": "failed" if failed else "ok",
                    "error": (res.error or f"image {res.image_id}: no {kind} query") if failed else None,
                    "source_caption_idx": res.source_caption_index,
                    # a request makes every kind at once: its tokens are counted on the first kind's row
                    "prompt_tokens": res.prompt_tokens if n == 0 else 0,
                    "completion_tokens": res.completion_tokens if n == 0 else 0,
                })
        inputs = self.item_fingerprints(list(batch.ids))
        with self.commit(QUERIES_BATCH):   # the queries, the captions they came from and their token use together
            self.store.put_queries(self.config_hash(), rows)
            self.record_inputs({r.image_id: inputs[r.image_id] for r in results})
            self._add_usage(results)
        failed = [r for r in results if r.error is not None]
        if progress:
            for r in failed:
                progress.message(r.error or f"image {r.image_id}: failed", "warning")
            progress.advance(len(results), failures=len(failed))
        return BatchResult(done=len(results) - len(failed), failed=len(failed))

    def _usage(self, counts: dict[str, int]) -> dict[str, Any]:
        return dict(counts, generator=self.cfg.queries.generator, model=self.cfg.queries.model,
                    cost_usd=estimate_cost(counts["prompt_tokens"], counts["completion_tokens"], self.cfg.queries.model))

    def _add_usage(self, results: list[QueryResult]) -> None:
        """Count a batch's requests and tokens for this run and, atomically, in the stored total of all runs."""
        if self.cfg.queries.generator != "openai":
            return
        summary = summarise_usage(results, self.cfg.queries.model)
        batch = {k: getattr(summary, k) for k in USAGE_FIELDS}
        key = f"queries/usage/{self.config_hash()}"
        with self.store.transaction():
            total = self.store.get_meta(key) or {}
            self.store.set_meta(key, self._usage({k: total.get(k, 0) + batch[k] for k in USAGE_FIELDS}))
        with self._lock:
            for k in USAGE_FIELDS:
                self._run[k] += batch[k]

    def finalize(self, progress: StageProgress | None = None) -> None:
        if not self._run["requests"]:
            return
        run = self._usage(self._run)
        self.store.set_meta("queries/last_run", run)
        if progress:
            progress.message(usage_line(run), "info")


class EvaluateStage(_WholeStage):
    name = "evaluate"

    def config(self) -> dict[str, Any]:
        from pipeline.evaluation import evaluation_config

        return evaluation_config(self.ws)

    def items(self) -> list[str]:
        from pipeline.evaluation import evaluation_plan

        plan = evaluation_plan(self.ws)
        return [f"{m}/{k}" for m in plan.methods for k in plan.kinds]

    def done_items(self) -> set[str]:
        """Method/kind pairs of a stored evaluation: its metrics *and* its summary (written together), and the
        pairs of the methods the summary found not applicable (nothing to rank: no metrics)."""
        eval_hash = self.config_hash()
        summary = self.store.get_meta(f"evaluation/{eval_hash}")
        if summary is None:
            return set()
        not_applicable = {f"{m}/{k}" for m in summary.get("not_applicable", {}) for k in summary.get("kinds", [])}
        return {f"{r.method}/{r.query_kind}" for r in self.store.evaluations(eval_hash)} | not_applicable

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        from pipeline.evaluation import evaluation_plan, run_evaluation

        result = run_evaluation(self.ws, self.config_hash(), evaluation_plan(self.ws), progress)
        done = len(result.methods) * len(result.kinds)
        return BatchResult(done=done, messages=[f"evaluated {done} method/kind pairs in {result.seconds:.1f} s"])


class ReportStage(_WholeStage):
    name = "report"

    def config(self) -> dict[str, Any]:
        from pipeline.caption_metrics.identity import current_caption_metrics_hash
        from pipeline.evaluation import evaluation_hash

        r = self.cfg.report
        return {"evaluate": evaluation_hash(self.ws), "caption_metrics": current_caption_metrics_hash(self.ws) or "",
                "sample_queries": r.sample_queries, "top": r.top, "version": REPORT_VERSION}

    def items(self) -> list[str]:
        return ["report"]

    def done_items(self) -> set[str]:
        from pathlib import Path

        meta = self.store.get_meta(f"report/{self.config_hash()}")
        if meta and all(Path(p).exists() for p in meta.get("files", [])):
            return {"report"}
        return set()

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        from pipeline.evaluation import evaluation_hash, load_evaluation
        from pipeline.reports import write_report

        eval_hash = evaluation_hash(self.ws)
        result = load_evaluation(self.ws, eval_hash)
        if result is None:
            raise CapsearchError("no evaluation for the current configuration: run `capsearch evaluate` first")
        paths = write_report(self.ws, result, progress, usage=caption_usage(self.ws))   # files replaced atomically
        crash_point(REPORT_FILES)
        with self.commit():
            self.store.set_meta(f"report/{self.config_hash()}", {"files": [str(p) for p in paths.all()],
                                                                 "html": str(paths.html)})
            self.store.set_meta("report/latest", {"files": [str(p) for p in paths.all()], "html": str(paths.html),
                                                  "eval_hash": eval_hash})
        if progress:
            progress.advance(1)
            progress.message(f"report written to {paths.html}", "info")
        return BatchResult(done=1)


def caption_usage(ws: Workspace) -> list[dict[str, Any]]:
    """One entry per enabled endpoint captioner: ``stored`` (its current captions' tokens and cost) and
    ``last_run`` (the newest stage run that sent requests: its status and usage with rates), as in ``--json``."""
    cfg = ws.config
    names = [n for n in cfg.enabled_captioners() if cfg.captioner(n).uses_endpoint]
    if not names:
        return []
    runs = [r for r in ws.store.stage_runs(stage="caption", limit=200) if r.usage]
    out = []
    for name in names:
        stage = CaptionStage(ws, name)
        last = next((r for r in runs if r.variant == name), None)
        out.append({"captioner": name, "model": stage.captioner.served_model, "stored": stage.stored_usage(),
                    "last_run": None if last is None else {"status": last.status, "started_at": last.started_at,
                                                           **last.as_dict()["usage"]}})
    return out
