"""Text search over the target photos, used by the CLI, the TUI and the evaluation.

Methods
-------
* one per captioner (``knn-consensus``, ``blip-base``, ...): cosine between the query's
  text embedding and the embedding of the captioner's caption of each target;
* ``oracle``: the same with one of the target's own reference captions that is *not* the
  one its evaluation queries were made from (an upper bound for caption-based search);
* ``clip``: the image embedder's text tower against the image embeddings (open_clip only);
* ``hybrid``: ``search.hybrid(caption scores, clip scores, search.hybrid_weight)`` with the
  captioner ``search.hybrid_captioner``.

Documents are read once from the store's ``.npy`` snapshots (``text/<key>/document`` keyed
by ``hash_text(caption)``, ``image/<key>`` keyed by image sha256) and grouped into distinct
vectors per method, aligned with the sorted target ids; a target without a usable caption
(failed, empty, not embedded) is *missing*: it never appears in results and ranks below
every scored photo. The text embedder is loaded once per process (model cache); a query the
workspace already embedded (an evaluation query) is read from the store, so search ranks it
exactly as the evaluation did; any other query is embedded, and the last few are remembered.

Identical vectors and ties
--------------------------
Each method's documents are a ``pipeline.distinct.DistinctRows``: every distinct caption
vector (or image vector, for ``clip``) is scored once per query and its score copied to every
photo that has it, so photos with the same caption text tie exactly on any CPU (``hybrid``
combines those copies elementwise, so photos with the same caption and the same image tie too).
Targets are kept sorted by photo id, and every list (``search``, the evaluation's stored top
ids, the TUI) orders by score descending, then photo id ascending. ``rank_of`` and the
evaluation never break a tie: the true photo gets its expected rank under random tie-breaking
(``pipeline.metrics``), e.g. 1.5 for a photo tied with one other at the top.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from pipeline import search as core
from pipeline.distinct import DistinctRows
from pipeline.errors import CapsearchError
from pipeline.hashing import hash_text
from pipeline.stages.vision import image_space
from pipeline.text_vectors import clip_text_space, document_space, query_space, text_vectors  # noqa: F401 (re-exported)
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.store import Store

ORACLE = "oracle"
CLIP = "clip"
HYBRID = "hybrid"
EXTRA_METHODS = (CLIP, HYBRID, ORACLE)
ORACLE_RULE = "sha256('oracle:<id>') over the non-blank reference captions other than the query source"
_QUERY_MEMORY = 64


def stage_hash(ws: Workspace, name: str, target: str = "") -> str:
    """The current configuration hash of a stage (the rows it reads or writes are keyed by it)."""
    from pipeline.stages.registry import build_stage

    try:
        return build_stage(ws, name, target).config_hash()
    except KeyError:
        label = f"{name}:{target}" if target else name
        raise CapsearchError(f"stage {label} is not installed in this capsearch") from None


def oracle_caption_index(image_id: str, captions: Sequence[str], source_idx: int | None) -> int | None:
    """Which reference caption the oracle uses for a target: never the one its queries came from."""
    usable = [i for i, c in enumerate(captions) if c.strip() and i != source_idx]
    if not usable:
        return None
    digest = hashlib.sha256(f"oracle:{image_id}".encode("utf-8")).hexdigest()
    return usable[int(digest[:16], 16) % len(usable)]


def query_sources(store: "Store", queries_hash: str) -> dict[str, int]:
    """image id -> index of the reference caption its (ok) queries were made from."""
    out: dict[str, int] = {}
    for row in store.queries(queries_hash, status="ok"):
        if row["source_caption_idx"] is not None:
            out.setdefault(row["image_id"], int(row["source_caption_idx"]))
    return out


def oracle_captions(store: "Store", target_ids: Sequence[str], queries_hash: str) -> dict[str, str]:
    """The oracle's caption of every target that has a reference caption other than its query source."""
    refs = store.reference_captions(target_ids)
    sources = query_sources(store, queries_hash)
    out = {}
    for image_id in target_ids:
        caps = refs.get(image_id, [])
        idx = oracle_caption_index(image_id, caps, sources.get(image_id))
        if idx is not None:
            out[image_id] = caps[idx]
    return out


@dataclass(frozen=True)
class Hit:
    image_id: str
    score: float
    caption: str
    rank: int                        # 1 = best


class SearchIndex:
    """Every search method over one workspace's targets, loaded once (see the module docstring).

    ``include_empty`` keeps methods that have no document at all (the evaluation counts them as all
    missing); by default ``methods()`` lists only methods with something to find.
    """

    def __init__(self, ws: Workspace, *, include_empty: bool = False, text_embedder: Any = None,
                 clip_embedder: Any = None):
        from pipeline.text_models import build_clip_embedder, build_text_embedder

        self.ws = ws
        self.cfg = ws.config
        self.store = ws.store
        self.text_embedder = text_embedder or build_text_embedder(self.cfg)
        self.clip_embedder = clip_embedder if clip_embedder is not None else build_clip_embedder(self.cfg)
        self.target_ids: list[str] = sorted(self.store.image_ids("target"))   # ties list by photo id
        self.position = {t: i for i, t in enumerate(self.target_ids)}
        self.captions: dict[str, dict[str, str]] = {}     # method -> target id -> caption shown in results
        self.documents: dict[str, DistinctRows] = {}
        self.unavailable: dict[str, str] = {}             # method -> why it cannot be searched
        self._memory: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()                     # the TUI searches from worker threads
        self._queries: dict[str, tuple[str, str]] | None = None
        self._include_empty = include_empty
        self._load_text_methods()
        self._load_clip()

    # -- loading ---------------------------------------------------------------------------------
    def _text_snapshot(self) -> tuple[dict[str, int], np.ndarray | None]:
        space = document_space(self.text_embedder.key)
        if space not in self.store.vector_spaces():
            return {}, None
        keys, matrix = self.store.load_array(space)
        return {k: i for i, k in enumerate(keys)}, matrix

    def _add_text_method(self, method: str, captions: dict[str, str], key_rows: dict[str, int],
                         matrix: np.ndarray | None) -> None:
        doc, src = [], []
        for image_id, text in captions.items():
            row = key_rows.get(hash_text(text))
            if row is not None and image_id in self.position:
                doc.append(self.position[image_id])
                src.append(row)
        self.captions[method] = {i: t for i, t in captions.items() if i in self.position}
        self.documents[method] = DistinctRows.from_rows(len(self.target_ids), doc, src, matrix)

    def _load_text_methods(self) -> None:
        key_rows, matrix = self._text_snapshot()
        for captioner in self.cfg.enabled_captioners():
            try:
                h = stage_hash(self.ws, "caption", captioner)
            except CapsearchError as exc:
                self.unavailable[captioner] = str(exc)
                continue
            ok = {i: r.text for i, r in self.store.captions(captioner, h, status="ok").items() if r.text.strip()}
            self._add_text_method(captioner, ok, key_rows, matrix)
        try:
            qh = stage_hash(self.ws, "queries")
        except CapsearchError as exc:
            self.unavailable[ORACLE] = str(exc)
            return
        self._add_text_method(ORACLE, oracle_captions(self.store, self.target_ids, qh), key_rows, matrix)

    def _load_clip(self) -> None:
        if self.clip_embedder is None:
            reason = (f"image embedder '{self.cfg.image_embedder.name}' has no text tower "
                      "(clip and hybrid need image_embedder.name = \"open_clip\")")
            self.unavailable[CLIP] = self.unavailable[HYBRID] = reason
            return
        space = image_space(self.clip_embedder.key)
        doc, src = [], []
        matrix = None
        if space in self.store.vector_spaces():
            keys, matrix = self.store.load_array(space)
            key_rows = {k: i for i, k in enumerate(keys)}
            for img in self.store.images(split="target"):
                if img.sha256 in key_rows:
                    doc.append(self.position[img.id])
                    src.append(key_rows[img.sha256])
        self.documents[CLIP] = DistinctRows.from_rows(len(self.target_ids), doc, src, matrix,
                                                      dim=self.clip_embedder.dim)
        hc = self.cfg.search.hybrid_captioner
        if hc not in self.documents:
            self.unavailable[HYBRID] = (f"search.hybrid_captioner '{hc}' is not an enabled captioner "
                                        f"({', '.join(self.cfg.enabled_captioners())})")

    # -- methods -----------------------------------------------------------------------------------
    def _method_ok(self, method: str) -> bool:
        if method == HYBRID:
            hc = self.cfg.search.hybrid_captioner
            return HYBRID not in self.unavailable and self._method_ok(CLIP) and self._method_ok(hc)
        docs = self.documents.get(method)
        return docs is not None and (self._include_empty or docs.n_present > 0)

    def methods(self) -> list[str]:
        """Searchable methods: captioners with caption embeddings, then clip and hybrid, then oracle."""
        names = [c for c in self.cfg.enabled_captioners() if c in self.documents] + [CLIP, HYBRID, ORACLE]
        return [m for m in names if self._method_ok(m)]

    def default_method(self) -> str:
        methods = self.methods()
        if not methods:
            raise CapsearchError("nothing to search yet: run the pipeline (`capsearch demo` or `capsearch run`) "
                                 "so that captions are written and embedded")
        wanted = self.cfg.search.default_method
        if wanted and wanted in methods:
            return wanted
        return methods[0]

    def check_method(self, method: str) -> None:
        if self._method_ok(method):
            return
        known = ", ".join(self.methods()) or "none yet"
        reason = self.unavailable.get(method)
        if reason is None and method == ORACLE:
            reason = "the oracle's reference captions are embedded by `capsearch evaluate`; run it first"
        elif reason is None and method in self.documents:
            reason = f"'{method}' has no embedded captions yet (run `capsearch embed-captions`)"
        raise CapsearchError(f"cannot search by '{method}': {reason or 'unknown method'}; available: {known}")

    def missing(self, method: str) -> int:
        """Targets the method cannot rank (no usable caption or embedding)."""
        if method == HYBRID:
            docs = self.documents[self.cfg.search.hybrid_captioner].missing | self.documents[CLIP].missing
            return int(docs.sum())
        return int(self.documents[method].missing.sum())

    def caption(self, method: str, image_id: str) -> str:
        source = self.cfg.search.hybrid_captioner if method in (CLIP, HYBRID) else method
        return self.captions.get(source, {}).get(image_id, "")

    # -- query embeddings ---------------------------------------------------------------------------
    def _remember(self, space: str, text: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        key = (space, text)
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        vec = compute()
        with self._lock:
            self._memory[key] = vec
            if len(self._memory) > _QUERY_MEMORY:
                self._memory.popitem(last=False)
        return vec

    def _stored_or_embedded(self, space: str, text: str, embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """The query's vector as the workspace stored it (an evaluation query), else freshly embedded."""
        _, stored = self.store.get_vectors(space, [hash_text(text)])
        return stored if len(stored) else embed([text])

    def text_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query embeddings in the caption space (the text embedder's query prompt)."""
        if len(texts) == 1:
            space = query_space(self.text_embedder.key)
            return self._remember("text", texts[0], lambda: self._stored_or_embedded(
                space, texts[0], self.text_embedder.embed_queries))
        return self.text_embedder.embed_queries(list(texts))

    def clip_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query embeddings from CLIP's text tower (the image space)."""
        if self.clip_embedder is None:
            raise CapsearchError(self.unavailable[CLIP])
        if len(texts) == 1:
            space = clip_text_space(self.clip_embedder.key)
            return self._remember("clip", texts[0], lambda: self._stored_or_embedded(
                space, texts[0], self.clip_embedder.embed_texts))
        return self.clip_embedder.embed_texts(list(texts))

    def encode(self, texts: Sequence[str], method: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(text-space, clip-space) query embeddings that ``method`` needs (None for the part it does not)."""
        text = self.text_queries(texts) if method != CLIP else None
        clip = self.clip_queries(texts) if method in (CLIP, HYBRID) else None
        return text, clip

    # -- scoring --------------------------------------------------------------------------------------
    def score_matrix(self, method: str, text_q: np.ndarray | None, clip_q: np.ndarray | None) -> np.ndarray:
        """(n_queries, n_targets) scores, NaN where the method has no document."""
        if method == HYBRID:
            captions = core.cosine_scores(text_q, self.documents[self.cfg.search.hybrid_captioner])
            return core.hybrid(captions, core.cosine_scores(clip_q, self.documents[CLIP]),
                               self.cfg.search.hybrid_weight)
        return core.cosine_scores(clip_q if method == CLIP else text_q, self.documents[method])

    def top_k(self, method: str, text_q: np.ndarray | None, clip_q: np.ndarray | None,
              k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best k target positions and scores per query (blocked search for single-space methods)."""
        if method == HYBRID:
            return core.top_from_scores(self.score_matrix(method, text_q, clip_q), k)
        return core.top_k_batch(clip_q if method == CLIP else text_q, self.documents[method], k)

    def search(self, query: str, method: str | None = None, k: int = 10) -> list[Hit]:
        """The k best targets for a text query, best first (missing documents never appear)."""
        if not query.strip():
            return []
        if k < 1:
            raise CapsearchError(f"k must be at least 1, got {k}")
        method = method or self.default_method()
        self.check_method(method)
        idx, sc = self.top_k(method, *self.encode([query], method), k)
        hits = []
        for i, s in zip(idx[0], sc[0]):
            if i < 0:
                break
            image_id = self.target_ids[int(i)]
            hits.append(Hit(image_id, float(s), self.caption(method, image_id), len(hits) + 1))
        return hits

    def rank_of(self, query: str, method: str, image_id: str) -> float:
        """Expected rank (1 = top, ties shared) of ``image_id`` for ``query``; a missing document gets the
        bottom ranks."""
        from pipeline.metrics import rank_bounds

        self.check_method(method)
        if image_id not in self.position:
            raise CapsearchError(f"'{image_id}' is not a target photo of this workspace")
        scores = self.score_matrix(method, *self.encode([query], method))
        return float(rank_bounds(scores, [self.position[image_id]]).expected[0])

    # -- evaluation queries -------------------------------------------------------------------------
    def evaluation_query(self, text: str) -> tuple[str, str] | None:
        """(true photo, query kind) when ``text`` is one of the evaluation queries (case and spaces ignored)."""
        if self._queries is None:
            self._queries = {}
            try:
                rows = self.store.queries(stage_hash(self.ws, "queries"), status="ok")
            except CapsearchError:
                rows = []
            for row in rows:
                self._queries.setdefault(_normalise(row["text"]), (row["image_id"], row["kind"]))
        return self._queries.get(_normalise(text))


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())
