"""The vision stages: image embeddings, neighbours, neighbour prompts, and one caption stage per captioner.

Configuration-hash chain (see docs/architecture.md):

- ``embed-images``: the embedder key. Vectors live in the space ``image/<key>`` keyed by
  image sha256, so an unchanged photo is never embedded twice, even after a re-split.
- ``neighbours``: embedder key, k, near-duplicate threshold, index, the split hash and
  the content (ids and sha256) of the reference DB.
- ``prompts``: the neighbours hash, template id, per-neighbour rule and token budget.
- ``caption:<name>``: the captioner's settings (kind, model, generation settings; not its
  batch size), plus the prompts hash (``vlm-neighbours``), the neighbours hash and text
  embedder key (``knn-consensus``) or the fixed instruction (``vlm-plain``).

An item whose input failed upstream (a photo that cannot be decoded has no embedding,
hence no neighbours, prompt or neighbour-based caption) is reported as failed with the
upstream reason; it is not stored as a failure, so it is computed once the input exists.
"""
from __future__ import annotations

import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pipeline.crashpoints import CAPTION_BATCH, EMBED_IMAGES_BATCH, NEIGHBOURS_BATCH, PROMPTS_BATCH, crash_point
from pipeline.errors import CapsearchError, ConfigError, StoreError
from pipeline.hashing import hash_obj, hash_text
from pipeline.models.batch_limit import OUT_OF_MEMORY, BatchLimit
from pipeline.progress import StageProgress
from pipeline.stages.base import Batch, BatchResult, Stage
from pipeline.stages.ingest import current_split_hash

if TYPE_CHECKING:
    import numpy as np

    from pipeline.backends import Captioner, ImageEmbedder
    from pipeline.distinct import DistinctRows
    from pipeline.store import ImageRow

# Photos are decoded for captioning at most this many pixels on the long side (above the input
# size of every supported captioner), which bounds the memory a batch of huge photos takes.
MAX_CAPTION_SIDE = 2048
# Without a VLM tokenizer, prompt length is estimated: words and punctuation marks, times 1.3
# (English text averages about 1.3 BPE tokens per word).
TOKENS_PER_WORD = 1.3
_WORD_OR_MARK = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Word-based token estimate used to budget prompts when no VLM tokenizer is configured."""
    return math.ceil(len(_WORD_OR_MARK.findall(text)) * TOKENS_PER_WORD)


def image_space(embedder_key: str) -> str:
    return f"image/{embedder_key}"


def collection_root(store) -> Path:
    """The folder the stored image paths are relative to (recorded by ingest)."""
    root = (store.get_meta("collection") or {}).get("root")
    if not root:
        raise StoreError("the workspace has no photos yet: run `capsearch data demo`, `data flickr8k` or `data folder` first")
    return Path(root)


def _round_up(size: int, inner: int) -> int:
    """``size`` rounded up to a multiple of ``inner`` (so that model batches are full)."""
    inner = max(1, inner)
    return max(1, math.ceil(size / inner)) * inner


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _names(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def report_missing_input(items: list[str], upstream_failures: dict[str, str], what: str, command: str,
                         progress: StageProgress | None) -> tuple[int, int]:
    """Batch items whose upstream output is absent: ``(failed, skipped)``.

    An item failed when its upstream step failed for it (the reason is passed on); otherwise
    that step has not run for it yet and the item is skipped with the command to run.
    """
    failed = [i for i in items if i in upstream_failures]
    skipped = [i for i in items if i not in upstream_failures]
    if progress:
        for item in failed:
            progress.message(f"{item}: {upstream_failures[item]}", "warning")
        if skipped:
            progress.message(f"{len(skipped)} photos have no {what} yet ({_names(skipped)}); "
                             f"run `capsearch {command}` first", "warning")
        if items:
            progress.advance(len(items), failures=len(failed))
    return len(failed), len(skipped)


# -- embed-images -----------------------------------------------------------------------------------------
class EmbedImagesStage(Stage):
    """Every ingested photo (reference DB and targets) embedded with the configured image embedder."""

    name = "embed-images"

    def __init__(self, ws, target: str = ""):
        super().__init__(ws, target)
        # photos per forward pass for this stage run: the configured size until out of GPU memory halves it
        self.model_batch = BatchLimit(self.cfg.image_embedder.batch_size)

    @cached_property
    def embedder(self) -> "ImageEmbedder":
        from pipeline.embedders.registry import build_image_embedder

        return build_image_embedder(self.cfg)

    @property
    def uses_gpu(self) -> bool:  # type: ignore[override]
        from pipeline.embedders.registry import embedder_runs_on_gpu

        return embedder_runs_on_gpu(self.cfg)

    @property
    def space(self) -> str:
        return image_space(self.embedder.key)

    def config(self) -> dict[str, Any]:
        return {"embedder": self.embedder.key}

    def items(self) -> list[str]:
        return self.store.image_ids()

    def _shas(self, ids: list[str] | tuple[str, ...] | None = None) -> dict[str, str]:
        return {r.id: r.sha256 for r in self.store.images(ids=ids)}

    def done_items(self) -> set[str]:
        shas = self._shas()
        present = self.store.has_vectors(self.space, sorted(set(shas.values())))
        return {i for i, sha in shas.items() if sha in present}

    def failed_items(self) -> dict[str, str]:
        failed = {p.item: p.reason for p in self.store.problems(self.name) if p.severity == "failed"}
        if not failed:
            return {}
        done = self.done_items()
        return {i: r for i, r in failed.items() if i not in done}

    def batch_size(self) -> int:
        """Several model batches per stage batch, so that the decoding threads run ahead of the model."""
        model_batch = getattr(self.embedder, "batch_size", 1)
        workers = getattr(self.embedder, "num_workers", 0)
        return _round_up(max(super().batch_size(), model_batch * 2 * max(1, workers)), model_batch)

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        rows = self.store.images(ids=batch.ids)
        present = self.store.has_vectors(self.space, [r.sha256 for r in rows])
        todo: dict[str, "ImageRow"] = {}
        for r in rows:
            if r.sha256 not in present:
                todo.setdefault(r.sha256, r)  # identical photos are embedded once
        errors: dict[str, str] = {}

        def advance(n: int, failures: int) -> None:
            if progress:
                progress.advance(n, failures=failures)

        if todo:
            root = collection_root(self.store)
            paths = [str(root / r.path) for r in todo.values()]
            by_path = dict(zip(paths, todo))
            size = self.model_batch.size
            vectors, ok = self.embedder.embed_paths(
                paths, limit=self.model_batch, progress=advance,
                on_error=lambda path, reason: errors.__setitem__(by_path[path], f"cannot embed the photo: {reason}"
                                                                 if reason == OUT_OF_MEMORY else
                                                                 f"cannot decode the photo: {reason}"))
            if progress and self.model_batch.size < size:
                progress.message(f"{self.name}: out of GPU memory, batch size lowered to {self.model_batch.size} "
                                 "for the rest of this run", "warning")
        keys = [sha for sha, good in zip(todo, ok) if good] if todo else []
        failed = [(r.id, "failed", errors[r.sha256]) for r in rows if r.sha256 in errors]
        failed_ids = {f[0] for f in failed}
        with self.commit():   # vectors and problems together
            if keys:
                self.store.put_vectors(self.space, keys, vectors[ok])
            crash_point(EMBED_IMAGES_BATCH)
            self.store.clear_problems(self.name, [r.id for r in rows if r.id not in failed_ids])
            if failed:
                self.store.record_problems(self.name, failed)
        if progress:
            for item, _, reason in failed:
                progress.message(f"skipped {item}: {reason}", "warning")
        advance(len(batch.ids) - len(todo), len(failed) - len(errors))  # duplicates, already embedded, removed
        missing = len(batch.ids) - len(rows)  # removed from the collection since planning
        return BatchResult(done=len(rows) - len(failed), failed=len(failed), skipped=missing)

    def finalize(self, progress: StageProgress | None = None) -> None:
        """Export the ``.npy`` snapshot that search and the TUI read."""
        if self.done_items():
            self.store.export_array(self.space)


# -- neighbours -------------------------------------------------------------------------------------------
class NeighboursStage(Stage):
    """For every target, the top-k most similar reference-DB photos (never itself, never another target)."""

    name = "neighbours"

    def __init__(self, ws, target: str = ""):
        super().__init__(ws, target)
        self.embed = EmbedImagesStage(ws)
        self._db: tuple[list[str], "DistinctRows"] | None = None

    def _reference_rows(self) -> list["ImageRow"]:
        return self.store.images(split="reference")

    def config(self) -> dict[str, Any]:
        n = self.cfg.neighbours
        return {
            "embedder": self.embed.embedder.key, "k": n.k, "near_duplicate_threshold": n.near_duplicate_threshold,
            "index": n.index, "split_hash": current_split_hash(self.store),
            "reference_db": hash_obj([(r.id, r.sha256) for r in self._reference_rows()]),
        }

    def items(self) -> list[str]:
        return self.store.image_ids("target")

    def done_items(self) -> set[str]:
        return self.store.neighbour_targets(self.config_hash())

    def failed_items(self) -> dict[str, str]:
        embed_failed = self.embed.failed_items()
        return {t: f"no image embedding ({reason})" for t in self.items() if (reason := embed_failed.get(t))}

    def batch_size(self) -> int:
        """Targets are searched in blocks of ``neighbours.block_size``: one pass over the DB per block."""
        return max(super().batch_size(), self.cfg.neighbours.block_size)

    def reference_matrix(self, progress: StageProgress | None = None) -> tuple[list[str], "DistinctRows"]:
        """(reference photo ids in id order, their vectors grouped by vector): loaded once per stage instance.
        Photos with the same content share one stored vector, so they tie as neighbours on any machine."""
        if self._db is None:
            from pipeline.distinct import DistinctRows

            refs = self._reference_rows()
            keys, mat = self.store.get_vectors(self.embed.space, sorted({r.sha256 for r in refs}))
            row = {k: i for i, k in enumerate(keys)}
            usable = [r for r in refs if r.sha256 in row]
            if not usable:
                raise CapsearchError(
                    f"no reference-DB photo has an image embedding in {self.embed.space}: run `capsearch embed-images` first")
            if progress and len(usable) < len(refs):
                progress.message(f"{len(refs) - len(usable)} reference photos have no embedding and are left out "
                                 "of the neighbour search (see `capsearch status`)", "warning")
            self._db = [r.id for r in usable], DistinctRows.from_rows(
                len(usable), range(len(usable)), [row[r.sha256] for r in usable], mat)
        return self._db

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        from pipeline.neighbours import find_neighbours

        n = self.cfg.neighbours
        db_ids, db = self.reference_matrix(progress)
        shas = {r.id: r.sha256 for r in self.store.images(ids=batch.ids)}
        keys, vecs = self.store.get_vectors(self.embed.space, sorted({shas[t] for t in batch.ids if t in shas}))
        row = {k: i for i, k in enumerate(keys)}
        have = [t for t in batch.ids if shas.get(t) in row]
        absent = sorted(set(batch.ids) - set(have))
        failed, skipped = report_missing_input(absent, self.failed_items() if absent else {},
                                               "image embedding", "embed-images", progress)
        if have:
            res = find_neighbours(vecs[[row[shas[t]] for t in have]], db, n.k, block_size=n.block_size,
                                  target_ids=have, db_ids=db_ids, near_duplicate_threshold=n.near_duplicate_threshold,
                                  index=n.index)
            rows = [(t, rank + 1, db_ids[j], float(res.scores[i, rank]), bool(res.near_duplicate[i, rank]))
                    for i, t in enumerate(have) for rank, j in enumerate(res.indices[i]) if j >= 0]
            with self.commit(NEIGHBOURS_BATCH):
                self.store.put_neighbours(self.config_hash(), rows)
            if progress:
                progress.advance(len(have))
        return BatchResult(done=len(have), failed=failed, skipped=skipped)


# -- prompts ----------------------------------------------------------------------------------------------
class PromptsStage(Stage):
    """The exact prompt for every target: its neighbours' reference captions put into the template.

    Budget: with a ``vlm-neighbours`` captioner enabled, prompts are counted with its tokenizer
    (only the processor is loaded, never the model) against ``prompts.max_tokens`` or, when that
    is 0, what the model's context leaves for them; otherwise with ``estimate_tokens`` against
    ``prompts.max_tokens`` (0: no limit). Trimmed prompts are stored with their warning and
    listed as ``warning`` problems.
    """

    name = "prompts"
    cheap = True

    def __init__(self, ws, target: str = ""):
        super().__init__(ws, target)
        self.neighbours = NeighboursStage(ws)
        self._captions: dict[str, list[str]] | None = None
        self._counter: tuple[Callable[[str], int], int | None] | None = None

    @cached_property
    def template(self) -> tuple[str, str]:
        """(template text, template id)."""
        from pipeline.prompts import load_template
        from pipeline.workspace import resolve_home_path

        path = self.cfg.prompts.template
        return load_template(resolve_home_path(path) if path else None)

    def token_captioner(self) -> str | None:
        """The first enabled ``vlm-neighbours`` captioner: its tokenizer counts prompt tokens."""
        for name in self.cfg.enabled_captioners():
            if self.cfg.captioner(name).kind == "vlm-neighbours":
                return name
        return None

    def _budget_config(self) -> dict[str, Any]:
        from pipeline.captioners.registry import default_model

        name = self.token_captioner()
        if name is None:
            return {"counter": f"words-x{TOKENS_PER_WORD}", "max_tokens": self.cfg.prompts.max_tokens}
        cc = self.cfg.captioner(name)
        return {"counter": "tokenizer", "model": cc.model or default_model(cc.kind),
                "max_tokens": self.cfg.prompts.max_tokens or "model context", "max_new_tokens": cc.max_new_tokens}

    def config(self) -> dict[str, Any]:
        return {"neighbours": self.neighbours.config_hash(), "template_id": self.template[1],
                "per_neighbour": self.cfg.prompts.per_neighbour, "token_budget": self._budget_config()}

    def items(self) -> list[str]:
        return self.store.image_ids("target")

    def done_items(self) -> set[str]:
        return set(self.store.prompts(self.config_hash()))

    def failed_items(self) -> dict[str, str]:
        return {t: f"no neighbours: {reason}" for t, reason in self.neighbours.failed_items().items()}

    def token_counter(self) -> tuple[Callable[[str], int], int | None]:
        """(token counter, budget or None for no limit), set up once per stage instance."""
        if self._counter is None:
            name = self.token_captioner()
            limit = self.cfg.prompts.max_tokens or None
            if name is None:
                self._counter = estimate_tokens, limit
            else:
                from pipeline.captioners.registry import build_captioner

                vlm: Any = build_captioner(self.cfg, name)
                budget = limit or vlm.max_prompt_tokens
                if budget <= 0:
                    raise ConfigError(f"captioner {name}: the model's context has no room for a prompt "
                                      f"(max_new_tokens={vlm.generation.max_new_tokens}); lower max_new_tokens")
                self._counter = vlm.count_prompt_tokens, budget
        return self._counter

    def reference_captions(self) -> dict[str, list[str]]:
        """Captions that may be shown to a captioner (reference DB only), loaded once per stage instance."""
        if self._captions is None:
            self._captions = self.store.reference_db_captions()
        return self._captions

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        from pipeline.prompts import build_prompt

        neighbours = self.store.neighbours(self.neighbours.config_hash(), batch.ids)
        absent = [t for t in batch.ids if t not in neighbours]
        failed, skipped = report_missing_input(absent, self.failed_items() if absent else {},
                                               "neighbours", "neighbours", progress)
        captions = self.reference_captions()
        count, budget = self.token_counter() if neighbours else (estimate_tokens, None)
        rows, warnings = [], []
        for t in batch.ids:
            if t not in neighbours:
                continue
            lists = [captions.get(n, []) for n, _score, _dup in neighbours[t]]
            res = build_prompt(self.template[0], lists, per_neighbour=self.cfg.prompts.per_neighbour,
                               max_tokens=budget, count_tokens=count if budget else None)
            rows.append((t, hash_text(res.text), res.text, res.n_captions_used, res.trimmed, res.warning))
            if res.warning:
                warnings.append((t, "warning", res.warning))
        with self.commit():   # prompts and their warnings together
            if rows:
                self.store.put_prompts(self.config_hash(), rows)
                crash_point(PROMPTS_BATCH)
                self.store.clear_problems(self.name, [r[0] for r in rows])
            if warnings:
                self.store.record_problems(self.name, warnings)
        if progress:
            if warnings:
                item, _, text = warnings[0]
                progress.message(f"{len(warnings)} prompts with a warning ({_names([w[0] for w in warnings])}), "
                                 f"e.g. {item}: {text}; `capsearch status` lists them", "warning")
            if rows:
                progress.advance(len(rows))
        return BatchResult(done=len(rows), failed=failed, skipped=skipped)


# -- caption:<captioner> ----------------------------------------------------------------------------------
class CaptionStage(Stage):
    """Captions of every target by one configured captioner (``target`` is its name)."""

    name = "caption"

    def __init__(self, ws, target: str = ""):
        if not target:
            raise ConfigError("the caption stage needs a captioner name, e.g. caption:knn-consensus")
        super().__init__(ws, target)
        self.captioner_config = self.cfg.captioner(target)
        # photos per captioner call for this stage run: the configured size until out of GPU memory halves it
        self.model_batch = BatchLimit(self.captioner_config.batch_size)
        self.kind = self.captioner_config.kind
        self.prompts = PromptsStage(ws) if self.kind == "vlm-neighbours" else None
        self.neighbours = NeighboursStage(ws) if self.kind == "knn-consensus" else None
        self.cheap = self.kind == "knn-consensus"   # no generative model: milliseconds a photo

    @cached_property
    def captioner(self) -> "Captioner":
        """Built once per stage instance; its model loads once per process (the shared model cache)."""
        from pipeline.captioners.registry import build_captioner

        return build_captioner(self.cfg, self.target, self.store)

    @property
    def uses_gpu(self) -> bool:  # type: ignore[override]
        from pipeline.captioners.registry import is_generative

        if not is_generative(self.cfg, self.target):
            return False
        from pipeline.models.device import resolve_device

        return resolve_device(self.cfg.runtime.device).startswith("cuda")

    def _instruction(self) -> str:
        from pipeline.captioners.vlm import DEFAULT_INSTRUCTION

        return self.captioner_config.prompt or DEFAULT_INSTRUCTION

    def config(self) -> dict[str, Any]:
        from pipeline.captioners.registry import default_model
        from pipeline.text_models import build_text_embedder

        out: dict[str, Any] = {"captioner": self.captioner_config.model_dump(mode="json", exclude={"batch_size"}),
                               "model_id": self.captioner_config.model or default_model(self.kind)}
        if self.prompts is not None:
            out["prompts"] = self.prompts.config_hash()
        elif self.neighbours is not None:
            out["neighbours"] = self.neighbours.config_hash()
            out["text_embedder"] = build_text_embedder(self.cfg).key
        elif self.kind == "vlm-plain":
            out["prompt"] = self._instruction()
        return out

    def items(self) -> list[str]:
        return self.store.image_ids("target")

    def done_items(self) -> set[str]:
        return set(self.store.captions(self.target, self.config_hash(), status="ok"))

    def _upstream_failures(self) -> dict[str, str]:
        if self.prompts is not None:
            return {t: f"no prompt ({reason})" for t, reason in self.prompts.failed_items().items()}
        if self.neighbours is not None:
            return self.neighbours.failed_items()
        return {}

    def failed_items(self) -> dict[str, str]:
        stored = self.store.captions(self.target, self.config_hash())
        failed = {i: row.error or row.status for i, row in stored.items() if row.status != "ok"}
        failed.update({i: r for i, r in self._upstream_failures().items() if i not in stored})
        return failed

    def batch_size(self) -> int:
        return _round_up(super().batch_size(), self.captioner_config.batch_size)

    def _inputs(self, ids: tuple[str, ...]) -> tuple[dict[str, str | None], dict[str, list[str]] | None, dict[str, str | None]]:
        """(prompt per item, neighbour captions per item or None, prompt id per item) for items whose input exists."""
        if self.prompts is not None:
            stored = self.store.prompts(self.prompts.config_hash(), ids)
            return ({i: text for i, (_, text) in stored.items()}, None, {i: pid for i, (pid, _) in stored.items()})
        if self.neighbours is not None:
            neighbours = self.store.neighbours(self.neighbours.config_hash(), ids)
            captions = self.store.reference_db_captions(sorted({n for ns in neighbours.values() for n, _, _ in ns}))
            lists = {t: [c for n, _, _ in ns for c in captions.get(n, [])] for t, ns in neighbours.items()}
            return {t: None for t in lists}, lists, {t: None for t in lists}
        prompt_id = hash_text(self._instruction()) if self.kind == "vlm-plain" else None
        return {i: None for i in ids}, None, {i: prompt_id for i in ids}

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        from pipeline.captioners.robust import caption_robust
        from pipeline.images import open_rgb

        prompts, neighbour_captions, prompt_ids = self._inputs(batch.ids)
        ready = [i for i in batch.ids if i in prompts]
        absent = [i for i in batch.ids if i not in prompts]
        what, command = ("prompt", "prompts") if self.prompts is not None else ("neighbours", "neighbours")
        failed, skipped = report_missing_input(absent, self._upstream_failures() if absent else {},
                                               what, command, progress)
        rows = {r.id: r for r in self.store.images(ids=ready)}
        root = collection_root(self.store) if ready else Path(".")

        def load(item: str) -> Any:
            try:
                return open_rgb(root / rows[item].path, max_side=MAX_CAPTION_SIDE)
            except Exception as exc:  # a bad photo is recorded with its reason, never fatal
                return f"cannot open the photo: {_one_line(exc)}"

        present = [i for i in ready if i in rows]
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            loaded = dict(zip(present, pool.map(load, present)))
        captioner = _StoreErrorTrap(self.captioner)
        settings = captioner.settings()
        records = []
        bad = {i: v for i, v in loaded.items() if isinstance(v, str)}
        for item, reason in bad.items():
            records.append({"image_id": item, "text": "", "status": "failed", "error": reason, "seconds": 0.0,
                            "attempts": 1})
            if progress:
                progress.message(f"{self.target}: {item} failed: {reason}", "warning")
                progress.advance(1, failures=1)
        good = [i for i in ready if i in loaded and i not in bad]
        if good:
            outcomes = caption_robust(
                captioner, [loaded[i] for i in good], [prompts[i] for i in good],
                [neighbour_captions[i] for i in good] if neighbour_captions is not None else None,
                batch_size=self.model_batch, progress=progress, item_names=good)
            records += [{"image_id": i, "text": o.text, "status": o.status, "error": o.error, "seconds": o.seconds,
                         "attempts": o.attempts} for i, o in zip(good, outcomes)]
        captioner.raise_trapped(self.store)
        for r in records:
            r.update(model=captioner.model_id, prompt_id=prompt_ids.get(r["image_id"]), settings=settings)
        if records:
            with self.commit(CAPTION_BATCH):
                self.store.put_captions(self.target, self.config_hash(), records)
        ok = sum(r["status"] == "ok" for r in records)
        gone = len(ready) - len(loaded)
        return BatchResult(done=ok, failed=len(records) - ok + failed, skipped=skipped + gone)


class _StoreErrorTrap:
    """A captioner whose store or disk errors fail the batch instead of becoming the photos' caption failures.

    ``caption_robust`` records any error of a captioner call as the failure of the items in it;
    a captioner that writes to the store (kNN consensus keeps text vectors there) can fail because
    the disk is full, which says nothing about the photos. The first such error is kept and
    raised once the batch is captioned, before anything is written, so the next run retries it."""

    def __init__(self, inner: "Captioner"):
        self._inner = inner
        self._trapped: BaseException | None = None

    def caption(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._inner.caption(*args, **kwargs)
        except Exception as exc:
            if self._trapped is None and _is_store_failure(exc):
                self._trapped = exc
            raise

    def raise_trapped(self, store: Any) -> None:
        if self._trapped is not None:
            exc, self._trapped = self._trapped, None
            translated = store.as_store_error(exc)
            if translated is None:
                raise exc
            raise translated from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _is_store_failure(exc: BaseException) -> bool:
    import sqlite3

    from pipeline.atomic import is_disk_full
    from pipeline.errors import DiskFullError

    return isinstance(exc, (StoreError, DiskFullError, sqlite3.Error)) or is_disk_full(exc)


STAGES: dict[str, type[Stage]] = {
    "embed-images": EmbedImagesStage,
    "neighbours": NeighboursStage,
    "prompts": PromptsStage,
    "caption": CaptionStage,
}
