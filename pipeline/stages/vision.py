"""The vision stages: image embeddings, neighbours, neighbour prompts, and one caption stage per captioner.

Configuration-hash chain (see docs/architecture.md):

- ``embed-images``: the embedder key. Vectors live in the space ``image/<key>`` keyed by
  image sha256, so an unchanged photo is never embedded twice, even after a re-split.
- ``neighbours``: embedder key, k, near-duplicate threshold, index. The reference DB is not
  part of the hash: a photo added to or removed from it makes only the targets whose
  neighbour list it changes stale (``NeighboursStage.prepare``), and each target's list is
  recorded with its photo's sha256.
- ``prompts``: the neighbours hash, template id, per-neighbour rule and token budget; each
  prompt is recorded with the neighbours and captions it lists.
- ``caption:<name>``: the captioner's settings (kind, model, generation settings; not its
  batch size), plus the prompts hash (``vlm-neighbours``), the neighbours hash and text
  embedder key (``knn-consensus``) or the fixed instruction (``vlm-plain``); each caption is
  recorded with its inputs (the photo's sha256, its prompt, its neighbours' captions).

Which photos: neighbours, prompts and captions cover the targets, or every photo with
``caption.scope = "collection"`` (``caption_items``). A photo's neighbours never include
itself, and duplicates of it (the same sha256: ``EXACT_DUPLICATE``; image similarity at or
above ``neighbours.near_duplicate_threshold``: ``NEAR_DUPLICATE``) are listed, marked, and
passed over: their captions never reach a prompt or the kNN consensus, and the list goes on
until it holds ``k`` neighbours that are not duplicates (``neighbour_captions``).

An item whose input failed upstream (a photo that cannot be decoded has no embedding,
hence no neighbours, prompt or neighbour-based caption) is reported as failed with the
upstream reason; it is not stored as a failure, so it is computed once the input exists.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

from pipeline.compute.captions import CaptionItem, CaptionsIn, CaptionsOut
from pipeline.compute.images import ImagesIn, ImagesOut
from pipeline.compute.jobs import BatchJob, BatchPayload
from pipeline.crashpoints import (CAPTION_BATCH, EMBED_IMAGES_BATCH, NEIGHBOURS_BATCH, NEIGHBOURS_PREPARE, PROMPTS_BATCH,
                                  crash_point)
from pipeline.errors import CapsearchError, ConfigError, StoreError
from pipeline.images import PhotoSource
from pipeline.locations import is_url, join
from pipeline.hashing import hash_obj, hash_text
from pipeline.keys import EXACT_DUPLICATE, NEAR_DUPLICATE, NOT_DUPLICATE, image_space
from pipeline.progress import StageProgress
from pipeline.prompts import estimate_tokens, neighbour_captions
from pipeline.snapshots import export_array
from pipeline.stage_keys import caption_instruction, token_captioner
from pipeline.applicability import no_captioned_photo
from pipeline.stages.base import Batch, BatchCancelled, BatchResult, PreparedBatch, Stage, StageCounts

if TYPE_CHECKING:
    import numpy as np

    from pipeline.backends import Captioner, ImageEmbedder
    from pipeline.distinct import DistinctRows
    from pipeline.store_rows import ImageRow

# A reference photo added since a target's neighbours were found makes them stale when it scores at least the
# target's last neighbour minus this (float noise between two ways of computing one score; erring towards
# recomputing, which is always correct).
STALE_MARGIN = 1e-5


def caption_items(ws) -> list[str]:
    """The photos neighbours, prompts and captions are made for: the targets, or every photo with
    ``caption.scope = "collection"`` (sorted ids)."""
    store = ws.store
    return store.image_ids() if ws.config.caption.scope == "collection" else store.image_ids("target")


def collection_root(store) -> str:
    """The folder or URL prefix the stored image paths are relative to (recorded by ingest)."""
    root = (store.get_meta("collection") or {}).get("root")
    if not root:
        raise StoreError("the workspace has no photos yet: run `capsearch data demo`, `data flickr8k` or `data folder` first")
    return str(root)


def photo_location(root: str, rel: str) -> str:
    """Where a stored photo is: its path under the collection's folder, or its URL under the prefix."""
    return join(root, rel)


def photo_source(location: str, send: bool) -> PhotoSource:
    """A photo as a batch job carries it: its location, and its bytes when ``send`` and it is a local file
    (a worker that cannot see the folder reads them from the job; one that cannot read them says why)."""
    if send and not is_url(location):
        try:
            with open(location, "rb") as fh:
                return PhotoSource(location, fh.read())
        except OSError:
            pass      # the worker reports the photo as unreadable, with the reason
    return PhotoSource(location)


def _round_up(size: int, inner: int) -> int:
    """``size`` rounded up to a multiple of ``inner`` (so that model batches are full)."""
    inner = max(1, inner)
    return max(1, math.ceil(size / inner)) * inner


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

    compute = "pipeline.compute.images:embed_images"

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
        return image_space(self.keys.image_embedder_key)

    def config(self) -> dict[str, Any]:
        return self.keys.embed_images()

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
        return self.run_split(batch, progress)

    def prepare_batch(self, batch: Batch, progress: StageProgress | None = None,
                      send_photos: bool = False) -> PreparedBatch:
        """The batch's photos without a vector yet, each content once (identical photos are embedded once)."""
        rows = self.store.images(ids=batch.ids)
        present = self.store.has_vectors(self.space, [r.sha256 for r in rows])
        todo: dict[str, "ImageRow"] = {}
        for r in rows:
            if r.sha256 not in present:
                todo.setdefault(r.sha256, r)
        root = collection_root(self.store) if todo else ""
        photos = tuple((sha, photo_source(photo_location(root, r.path), send_photos)) for sha, r in todo.items())
        return PreparedBatch(batch, BatchJob(self.compute_ref(), batch.index, ImagesIn(photos)), (rows, len(todo)))

    def compute_here(self, job: BatchJob, progress: StageProgress | None = None) -> BatchPayload:
        """In this process with this stage's embedder."""
        from pipeline.compute.jobs import run_job

        return run_job(job, progress or StageProgress(self.label, 0), embedder_=self.embedder)

    def commit_payload(self, prepared: PreparedBatch, payload: BatchPayload,
                       progress: StageProgress | None = None) -> BatchResult:
        rows, n_todo = prepared.local
        out: ImagesOut = payload.output
        errors = out.errors
        failed = [(r.id, "failed", errors[r.sha256]) for r in rows if r.sha256 in errors]
        failed_ids = {f[0] for f in failed}
        with self.commit():   # vectors and problems together
            if out.keys:
                self.store.put_vectors(self.space, out.keys, out.vectors)
            crash_point(EMBED_IMAGES_BATCH)
            self.store.clear_problems(self.name, [r.id for r in rows if r.id not in failed_ids])
            if failed:
                self.store.record_problems(self.name, failed)
        if progress:
            for item, _, reason in failed:
                progress.message(f"skipped {item}: {reason}", "warning")
            # duplicates, already embedded, removed since planning
            progress.advance(len(prepared.batch.ids) - n_todo, len(failed) - len(errors))
        missing = len(prepared.batch.ids) - len(rows)  # removed from the collection since planning
        return BatchResult(done=len(rows) - len(failed), failed=len(failed), skipped=missing)

    def finalize(self, progress: StageProgress | None = None) -> None:
        """Export the ``.npy`` snapshot that search and the TUI read."""
        if self.done_items():
            export_array(self.store, self.space)
            from pipeline.search_service import CLIP, prepare_search_indexes

            prepare_search_indexes(self.ws, [CLIP], (lambda m: progress.message(m, "info")) if progress else None)


# -- neighbours -------------------------------------------------------------------------------------------
@dataclass
class DbChanges:
    """The usable reference DB now, and how it differs from the one the stored neighbours were found in."""
    current: dict[str, str]            # id -> sha256
    removed: set[str]                  # ids gone, or whose photo was replaced
    added: dict[str, str]              # ids new, or whose photo was replaced -> sha256
    unknown: bool = False              # no record of the earlier DB: every stored list is stale


class NeighboursStage(Stage):
    """For every photo of ``caption_items``, its most similar captioned reference-DB photos: ``k`` that are
    not duplicates of it (after any duplicates that rank above them, listed and marked), never itself."""

    name = "neighbours"

    def __init__(self, ws, variant: str = ""):
        super().__init__(ws, variant)
        self.embed = EmbedImagesStage(ws)
        self._db: tuple[list[str], list[str], "DistinctRows"] | None = None
        self._db_lock = threading.Lock()            # batches of one stage run may run in several threads
        self._approximate = None                     # pipeline.vector_index.Approximate above the threshold
        self._space: tuple = ()                      # (key -> row, image snapshot matrix, its FileRows or None)

    def applicable(self) -> str | None:
        return no_captioned_photo(self.store)

    def config(self) -> dict[str, Any]:
        return self.keys.neighbours()

    def items(self) -> list[str]:
        return caption_items(self.ws)

    def done_items(self) -> set[str]:
        stored = self.store.neighbour_targets(self.config_hash()) & set(self.items())
        return self.fresh(stored) - self.stale_targets(stored)

    def failed_items(self) -> dict[str, str]:
        embed_failed = self.embed.failed_items()
        return {t: f"no image embedding ({reason})" for t in self.items() if (reason := embed_failed.get(t))}

    def batch_size(self) -> int:
        """Targets are searched in blocks of ``neighbours.block_size``: one pass over the DB per block."""
        return max(super().batch_size(), self.cfg.neighbours.block_size)

    # -- the reference DB and what changed in it -------------------------------------------------------
    def _usable_db(self) -> dict[str, str]:
        """id -> sha256 of the reference photos that can be neighbours: captioned, with an image embedding."""
        captioned = set(self.store.reference_caption_counts())
        refs = [r for r in self.store.images(split="reference") if r.id in captioned]
        present = self.store.has_vectors(self.embed.space, sorted({r.sha256 for r in refs}))
        return {r.id: r.sha256 for r in refs if r.sha256 in present}

    def _db_keys(self) -> tuple[str, str]:
        h = self.config_hash()
        return f"neighbours/db-digest/{h}", f"neighbours/db/{h}"

    def db_changes(self) -> "DbChanges | None":
        """What changed in the usable DB since the stored neighbours were planned (None: nothing)."""
        current = self._usable_db()
        digest_key, members_key = self._db_keys()
        if self.store.get_meta(digest_key) == hash_obj(sorted(current.items())):
            return None
        recorded = self.store.get_meta(members_key)
        if recorded is None:   # never planned under this configuration: every stored list is suspect
            return DbChanges(current, set(), dict(current), unknown=True)
        removed = {i for i, sha in recorded.items() if current.get(i) != sha}
        added = {i: sha for i, sha in current.items() if recorded.get(i) != sha}
        return DbChanges(current, removed, added)

    def stale_targets(self, stored: set[str]) -> set[str]:
        """Stored neighbour lists that the DB's changes would change: a listed neighbour left (or was replaced),
        or an added photo ranks above the last one listed (any added photo, where the DB had fewer than k)."""
        if not stored:
            return set()
        changes = self.db_changes()
        if changes is None:
            return set()
        if changes.unknown:
            return set(stored)
        removed, added = changes.removed, changes.added
        lists = self.store.neighbours(self.config_hash(), sorted(stored))
        stale = {t for t, ns in lists.items() if any(n.id in removed for n in ns)}
        others = sorted(t for t in lists if t not in stale)
        if not added or not others:
            return stale
        k = self.cfg.neighbours.k
        short = {t for t in others if sum(1 for n in lists[t] if not n.duplicate) < k}
        stale |= {t for t in short if set(added) - {t}}
        full = [t for t in others if t not in short]
        if not full:
            return stale
        import numpy as np

        from pipeline.distinct import FileRows, block_rows
        from pipeline.neighbours import unit_rows
        from pipeline.snapshots import load_array

        shas = {r.id: r.sha256 for r in self.store.images(ids=full)}
        keys, mat = load_array(self.store, self.embed.space)      # memory-mapped: read in blocks below
        row = {k_: i for i, k_ in enumerate(keys)}
        reader = FileRows.of(mat)

        def vectors(at: list[int]) -> np.ndarray:
            return reader.read(at) if reader is not None else np.asarray(mat[at], dtype=np.float32)

        added_ids = [a for a in sorted(added) if added[a] in row]
        if not added_ids:
            return stale
        have = [t for t in full if shas.get(t) in row]
        stale |= set(full) - set(have)
        position = {a: j for j, a in enumerate(added_ids)}
        best = np.full(len(have), -np.inf, dtype=np.float32)
        step = max(1, block_rows(mat.shape[1], self.cfg.index.block_mb << 20) // 4)
        for a0 in range(0, len(added_ids), step):
            part = added_ids[a0:a0 + step]
            amat = unit_rows(vectors([row[added[a]] for a in part]))
            for t0 in range(0, len(have), step):
                block = have[t0:t0 + step]
                sims = unit_rows(vectors([row[shas[t]] for t in block])) @ amat.T
                for i, t in enumerate(block):          # a photo is never its own neighbour
                    j = position.get(t)
                    if j is not None and a0 <= j < a0 + len(part):
                        sims[i, j - a0] = -np.inf
                best[t0:t0 + len(block)] = np.maximum(best[t0:t0 + len(block)], sims.max(axis=1))
        for i, t in enumerate(have):
            if best[i] >= lists[t][-1].score - STALE_MARGIN:
                stale.add(t)
        return stale

    def prepare(self, progress: StageProgress | None = None) -> None:
        """Drop the stored lists the reference DB's changes made stale and record the DB they now hold for:
        one transaction, so a crash after it leaves those targets missing (computed by the next run)."""
        if self.applicable():
            return
        with self.store.transaction():
            changes = self.db_changes()
            if changes is None:
                return
            stored = self.store.neighbour_targets(self.config_hash())
            stale = self.stale_targets(stored)
            if stale:
                self.store.delete_neighbours(self.config_hash(), sorted(stale))
            crash_point(NEIGHBOURS_PREPARE)
            digest_key, members_key = self._db_keys()
            self.store.set_meta(members_key, changes.current)
            self.store.set_meta(digest_key, hash_obj(sorted(changes.current.items())))
        self._db = None
        if progress and stale and not changes.unknown:
            progress.message(f"the reference DB changed ({len(changes.added)} photos added, {len(changes.removed)} "
                             f"removed, replacements counted in both): {len(stale)} photos get new neighbours", "info")

    def reference_matrix(self, progress: StageProgress | None = None) -> tuple[list[str], list[str], "DistinctRows"]:
        """(usable reference photo ids in id order, their sha256, their vectors grouped by vector): loaded once
        per stage instance from the checked memory-mapped snapshot of the image space (read in blocks, never
        copied whole). Photos with the same content share one stored vector, so they tie as neighbours on any
        machine."""
        with self._db_lock:
            if self._db is None:
                from pipeline.distinct import DistinctRows, FileRows
                from pipeline.snapshots import load_array

                usable = self._usable_db()
                if not usable:
                    raise CapsearchError(
                        f"no captioned reference-DB photo has an image embedding in {self.embed.space}: "
                        "run `capsearch embed-images` first")
                ids = sorted(usable)
                keys, mat = load_array(self.store, self.embed.space)
                row = {k: i for i, k in enumerate(keys)}
                captioned = self.store.reference_caption_counts()
                n_refs = sum(1 for r in self.store.images(split="reference") if r.id in captioned)
                if progress and len(ids) < n_refs:
                    progress.message(f"{n_refs - len(ids)} reference photos have no embedding and are left out "
                                     "of the neighbour search (see `capsearch status`)", "warning")
                shas = [usable[i] for i in ids]
                db = DistinctRows.from_rows(len(ids), range(len(ids)), [row[s] for s in shas], mat)
                self._space = row, mat, FileRows.of(mat)
                self._approximate = self._index(shas, db, progress)
                self._db = ids, shas, db
            return self._db

    def approximate(self, n_db: int) -> bool:
        """Whether neighbours of a DB of ``n_db`` photos are looked up through the approximate index."""
        mode, above = self.cfg.neighbours.index, self.cfg.index.approximate_above
        return mode == "approximate" or (mode == "auto" and above > 0 and n_db > above)

    def _index(self, shas: list[str], db: "DistinctRows", progress: StageProgress | None):
        """The approximate index over the DB's distinct vectors (built or updated as the DB changed), or None."""
        if not self.approximate(db.n_present):
            return None
        from pipeline.vector_index import Approximate, ensure

        keys = [shas[int(db.members[db.starts[r]])] for r in range(db.vectors.shape[0])]
        index = ensure(self.store, "neighbours", self.embed.space, keys, db.vectors, self.cfg.index.probes,
                       notice=(lambda m: progress.message(m, "warning")) if progress else None)
        info = index.info()
        if progress:
            recall = "not measured" if info.recall_at_10 is None else f"{info.recall_at_10:.3f}"
            progress.message(f"neighbours through the approximate index ({info.rows:,} reference vectors, "
                             f"{info.lists} lists, {info.probes} probed; recall@10 {recall})", "info")
        return Approximate(index, index.label_rows({k: r for r, k in enumerate(keys)}), self.cfg.index.probes)

    def search(self, targets: list[str], target_shas: list[str], vectors: "np.ndarray") -> list[tuple]:
        """Neighbour rows (target, rank, neighbour, score, duplicate kind) of each target: DB photos by score
        (ties by id) until k of them are not duplicates of the target; never the target itself."""
        from pipeline.neighbours import find_neighbours

        n = self.cfg.neighbours
        db_ids, db_shas, db = self.reference_matrix()
        rows: list[tuple] = []
        todo = list(range(len(targets)))
        ask = n.k * 2
        while todo:
            res = find_neighbours(vectors[todo], db, min(ask, max(1, len(db_ids))), block_size=n.block_size,
                                  target_ids=[targets[i] for i in todo], db_ids=db_ids,
                                  near_duplicate_threshold=n.near_duplicate_threshold,
                                  approximate=self._approximate, block_bytes=self.cfg.index.block_mb << 20)
            again = []
            for r, i in enumerate(todo):
                listed, usable = [], 0
                for rank, j in enumerate(res.indices[r]):
                    if j < 0:
                        break
                    kind = (EXACT_DUPLICATE if db_shas[j] == target_shas[i] else
                            NEAR_DUPLICATE if res.near_duplicate[r, rank] else NOT_DUPLICATE)
                    listed.append((targets[i], len(listed) + 1, db_ids[j], float(res.scores[r, rank]), kind))
                    usable += kind == NOT_DUPLICATE
                    if usable == n.k:
                        break
                if usable < n.k and len(listed) == ask and ask < len(db_ids):
                    again.append(i)        # more duplicates than room: look further for this target
                else:
                    rows += listed
            todo, ask = again, ask * 4
        return rows

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        import numpy as np

        self.reference_matrix(progress)
        shas = {r.id: r.sha256 for r in self.store.images(ids=batch.ids)}
        row, mat, reader = self._space          # the image snapshot the DB was read from: targets from it too
        have = [t for t in batch.ids if shas.get(t) in row]
        absent = sorted(set(batch.ids) - set(have))
        failed, skipped = report_missing_input(absent, self.failed_items() if absent else {},
                                               "image embedding", "embed-images", progress)
        if have:
            at = [row[shas[t]] for t in have]
            vecs = reader.read(at) if reader is not None else np.asarray(mat[at], dtype=np.float32)
            rows = self.search(have, [shas[t] for t in have], vecs)
            with self.commit(NEIGHBOURS_BATCH):
                self.store.put_neighbours(self.config_hash(), rows)
                self.record_inputs({t: shas[t] for t in have})
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

    def __init__(self, ws, variant: str = ""):
        super().__init__(ws, variant)
        self.neighbours = NeighboursStage(ws)
        self._counter: tuple[Callable[[str], int], int | None] | None = None

    @property
    def template(self) -> tuple[str, str]:
        """(template text, template id)."""
        return self.keys.template

    def applicable(self) -> str | None:
        return self.neighbours.applicable()

    def config(self) -> dict[str, Any]:
        return self.keys.prompts()

    def items(self) -> list[str]:
        return caption_items(self.ws)

    def done_items(self) -> set[str]:
        return self.fresh(set(self.store.prompts(self.config_hash())) & set(self.items()))

    def item_fingerprints(self, ids: list[str]) -> dict[str, str]:
        """A prompt's inputs: the neighbours it lists (not duplicates of the photo) and their captions."""
        lists = neighbour_captions(self.store, self.neighbours.config_hash(), ids)
        return {i: hash_obj(lists[i]) if i in lists else "" for i in ids}

    def failed_items(self) -> dict[str, str]:
        return {t: f"no neighbours: {reason}" for t, reason in self.neighbours.failed_items().items()}

    def token_counter(self) -> tuple[Callable[[str], int], int | None]:
        """(token counter, budget or None for no limit), set up once per stage instance."""
        if self._counter is None:
            name = token_captioner(self.cfg)
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

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        from pipeline.prompts import build_prompt

        neighbours = neighbour_captions(self.store, self.neighbours.config_hash(), batch.ids)
        absent = [t for t in batch.ids if t not in neighbours]
        failed, skipped = report_missing_input(absent, self.failed_items() if absent else {},
                                               "neighbours", "neighbours", progress)
        count, budget = self.token_counter() if neighbours else (estimate_tokens, None)
        rows, warnings = [], []
        for t in batch.ids:
            if t not in neighbours:
                continue
            res = build_prompt(self.template[0], [caps for _n, caps in neighbours[t]],
                               per_neighbour=self.cfg.prompts.per_neighbour,
                               max_tokens=budget, count_tokens=count if budget else None)
            rows.append((t, hash_text(res.text), res.text, res.n_captions_used, res.trimmed, res.warning))
            if res.warning:
                warnings.append((t, "warning", res.warning))
        with self.commit():   # prompts, their inputs and their warnings together
            if rows:
                self.store.put_prompts(self.config_hash(), rows)
                crash_point(PROMPTS_BATCH)
                self.record_inputs({r[0]: hash_obj(neighbours[r[0]]) for r in rows})
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
    """Captions of every target by one configured captioner (``variant`` is its name)."""

    name = "caption"
    compute = "pipeline.compute.captions:caption_photos"

    def __init__(self, ws, variant: str = ""):
        if not variant:
            raise ConfigError("the caption stage needs a captioner name, e.g. caption:knn-consensus")
        super().__init__(ws, variant)
        self.captioner_config = self.cfg.captioner(variant)
        self.kind = self.captioner_config.kind
        self.prompts = PromptsStage(ws) if self.kind == "vlm-neighbours" else None
        self.neighbours = NeighboursStage(ws) if self.kind == "knn-consensus" else None
        self.cheap = self.kind == "knn-consensus"   # no generative model: milliseconds a photo
        # a VLM behind an OpenAI-compatible server (pipeline.captioners.endpoint): a network stage
        self.endpoint = self.captioner_config.uses_endpoint
        self.network = self.endpoint

    @cached_property
    def captioner(self) -> "Captioner":
        """Built once per stage instance; its model loads once per process (the shared model cache)."""
        from pipeline.captioners.registry import build_captioner

        return build_captioner(self.cfg, self.variant, self.store)

    @property
    def remote(self) -> bool:
        """kNN consensus keeps its candidates' text vectors in the store: it runs in the flow's process (it costs
        milliseconds a photo); every other captioner may caption on a worker."""
        return self.kind != "knn-consensus"

    @property
    def uses_gpu(self) -> bool:  # type: ignore[override]
        from pipeline.captioners.registry import runs_model_here

        if not runs_model_here(self.cfg, self.variant):
            return False
        from pipeline.models.device import resolve_device

        return resolve_device(self.cfg.runtime.device).startswith("cuda")

    def config(self) -> dict[str, Any]:
        return self.keys.caption(self.variant)

    def applicable(self) -> str | None:
        upstream = self.prompts or self.neighbours
        return upstream.applicable() if upstream is not None else None

    def items(self) -> list[str]:
        return caption_items(self.ws)

    def done_items(self) -> set[str]:
        return self.fresh(set(self.store.captions(self.variant, self.config_hash(), status="ok")) & set(self.items()))

    def item_fingerprints(self, ids: list[str]) -> dict[str, str]:
        """A caption's inputs: the photo (sha256) and, for neighbour-based captioners, the prompt it was given
        or the neighbours' captions it chose from (kNN consensus looks at no pixels: those alone)."""
        if self.neighbours is not None:
            lists = neighbour_captions(self.store, self.neighbours.config_hash(), ids)
            return {i: hash_obj(lists[i]) if i in lists else "" for i in ids}
        shas = super().item_fingerprints(ids)
        if self.prompts is not None:
            prompts = self.store.prompts(self.prompts.config_hash(), ids)
            return {i: hash_obj([shas[i], prompts[i].prompt_id if i in prompts else ""]) for i in ids}
        return shas

    def _upstream_failures(self) -> dict[str, str]:
        if self.prompts is not None:
            return {t: f"no prompt ({reason})" for t, reason in self.prompts.failed_items().items()}
        if self.neighbours is not None:
            return self.neighbours.failed_items()
        return {}

    def failed_items(self) -> dict[str, str]:
        stored = self.store.captions(self.variant, self.config_hash())
        current = self.fresh(set(stored))          # a failure with other inputs now is tried again
        failed = {i: row.error or row.status for i, row in stored.items() if row.status != "ok" and i in current}
        failed.update({i: r for i, r in self._upstream_failures().items() if i not in stored})
        return failed

    def batch_size(self) -> int:
        return _round_up(super().batch_size(), self.captioner_config.batch_size)

    def _inputs(self, ids: tuple[str, ...]) -> tuple[dict[str, str | None], dict[str, list[str]] | None, dict[str, str | None]]:
        """(prompt per item, neighbour captions per item or None, prompt id per item) for items whose input exists."""
        if self.prompts is not None:
            stored = self.store.prompts(self.prompts.config_hash(), ids)
            return ({i: p.text for i, p in stored.items()}, None, {i: p.prompt_id for i, p in stored.items()})
        if self.neighbours is not None:
            neighbours = neighbour_captions(self.store, self.neighbours.config_hash(), ids)
            lists = {t: [c for _n, caps in ns for c in caps] for t, ns in neighbours.items()}
            return {t: None for t in lists}, lists, {t: None for t in lists}
        prompt_id = hash_text(caption_instruction(self.cfg, self.variant)) if self.kind == "vlm-plain" else None
        return {i: None for i in ids}, None, {i: prompt_id for i in ids}

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        return self.run_split(batch, progress)

    def prepare_batch(self, batch: Batch, progress: StageProgress | None = None,
                      send_photos: bool = False) -> PreparedBatch:
        """Each item with its input (prompt, neighbours' captions) and where its photo is; items whose input
        is missing are reported here and left out."""
        prompts, candidates, prompt_ids = self._inputs(batch.ids)
        ready = [i for i in batch.ids if i in prompts]
        inputs = self.item_fingerprints(ready)
        absent = [i for i in batch.ids if i not in prompts]
        what, command = ("prompt", "prompts") if self.prompts is not None else ("neighbours", "neighbours")
        failed, skipped = report_missing_input(absent, self._upstream_failures() if absent else {},
                                               what, command, progress)
        rows = {r.id: r for r in self.store.images(ids=ready)}
        root = collection_root(self.store) if ready else ""
        present = [i for i in ready if i in rows]
        pixels = self.kind != "knn-consensus"   # kNN consensus reads the neighbours' captions, never the pixels
        items = tuple(CaptionItem(i, photo_source(photo_location(root, rows[i].path), send_photos) if pixels else None,
                                  prompts[i], tuple(candidates[i]) if candidates is not None else None)
                      for i in present)
        job = BatchJob(self.compute_ref(), batch.index, CaptionsIn(items))
        return PreparedBatch(batch, job, (inputs, prompt_ids, failed, skipped, len(ready) - len(present)))

    def compute_here(self, job: BatchJob, progress: StageProgress | None = None) -> BatchPayload:
        """In this process with this stage's captioner (kNN consensus's keeps text vectors in the store) and the
        run's cancel event (an endpoint captioner stops within 50 ms); a store or disk error it raised fails the
        batch as that error."""
        from pipeline.compute.jobs import run_job

        try:
            return run_job(job, progress or StageProgress(self.label, 0), captioner_=self.captioner,
                           cancelled=self.cancelled)
        except Exception as exc:
            # a store failure inside the captioner comes as a StoreError caused by the SQLite or disk error
            translated = self.store.as_store_error(exc) or (
                self.store.as_store_error(exc.__cause__) if isinstance(exc, StoreError) and exc.__cause__ else None)
            if translated is None:
                raise
            raise translated from exc

    def commit_payload(self, prepared: PreparedBatch, payload: BatchPayload,
                       progress: StageProgress | None = None) -> BatchResult:
        """The batch's captions (with each photo's tokens, through an endpoint) and their inputs, in one
        transaction. A batch an endpoint captioner stopped (the run was cancelled, the server went away) writes
        what it captioned first, then raises (``BatchCancelled``, ``EndpointUnavailable``)."""
        from dataclasses import astuple

        from pipeline.stages.outcome import TokenUsage

        inputs, prompt_ids, failed, skipped, gone = prepared.local
        out: CaptionsOut = payload.output
        records = [{"image_id": r.image_id, "text": r.text, "status": r.status, "error": r.error,
                    "seconds": r.seconds, "attempts": r.attempts, "model": out.model_id,
                    "prompt_id": prompt_ids.get(r.image_id), "settings": out.settings,
                    **({"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens}
                       if out.usage is not None else {})} for r in out.records]
        if records:
            with self.commit(CAPTION_BATCH):
                self.store.put_captions(self.variant, self.config_hash(), records)
                self.record_inputs({r["image_id"]: inputs[r["image_id"]] for r in records})
        ok = sum(r["status"] == "ok" for r in records)
        if out.stop is not None:
            from pipeline.captioners.endpoint import EndpointUnavailable

            kind, why = out.stop
            if kind == "unavailable":
                raise EndpointUnavailable(f"{self.label}: {why}; {len(records)} photos of this batch were captioned "
                                          "and kept, the rest are left for the next run")
            raise BatchCancelled(f"{self.label}: cancelled with {out.unsent} photos of the batch not captioned; "
                                 f"{len(records)} kept")
        usage = TokenUsage(*astuple(out.usage)) if out.usage is not None else None
        return BatchResult(done=ok, failed=len(records) - ok + failed, skipped=skipped + gone + out.unsent,
                           usage=usage)

    def counts(self) -> StageCounts:
        counts = super().counts()
        if self.endpoint and not counts.not_applicable:
            counts.usage = self.stored_usage()
        return counts

    def stored_usage(self) -> dict[str, Any]:
        """What the captions stored now (current configuration) cost the server: tokens and their price."""
        from pipeline.stages.outcome import TokenUsage

        rows = [r for r in self.store.captions(self.variant, self.config_hash()).values()
                if r.prompt_tokens or r.completion_tokens]
        p = sum(r.prompt_tokens for r in rows)
        c = sum(r.completion_tokens for r in rows)
        return TokenUsage(len(rows), sum(r.attempts for r in rows), p, c, self.captioner.cost(p, c)).as_dict()
