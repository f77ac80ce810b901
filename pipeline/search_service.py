"""Text search over a workspace's photos, and search by example photo, used by the CLI, the TUI and the
evaluation.

Scopes
------
* ``collection`` (the default, ``search.scope``): every photo. A photo is found by every caption it has:
  its human captions and the caption each enabled captioner wrote for it (``pipeline.photo_documents``:
  a photo scores the best of its captions, and a hit says which kind matched). Uncaptioned photos are
  found by their generated captions, and every photo by its image for ``clip`` and ``hybrid``.
* ``targets``: the experiment's view, one caption per target photo; evaluation ranks in this scope only.

Methods
-------
* ``captions`` (collection scope): every caption kind at once;
* one per captioner (``knn-consensus``, ``blip-base``, ...): cosine between the query's text embedding
  and that captioner's caption of each photo (in the collection scope: and the photo's human captions);
* ``oracle`` (targets scope): the same with one of the target's own reference captions that is *not* the
  one its evaluation queries were made from (an upper bound for caption-based search);
* ``clip``: the image embedder's text tower against the image embeddings (open_clip only);
* ``hybrid``: ``search.hybrid(caption scores, clip scores, search.hybrid_weight)`` with the
  captioner ``search.hybrid_captioner`` (in the collection scope a photo without a caption is ranked by its
  image alone, ``fill_missing``).

``like(photo)`` lists the photos most like an example (a photo of the workspace, or any image file), the
example left out: its identical copies (the same bytes) first, then its near-duplicates (image similarity at
least ``neighbours.near_duplicate_threshold``), then the rest by image similarity combined (``hybrid`` with
``fill_missing``) with caption similarity between captions written for the photos (``own_descriptions``:
human captions, and captions of captioners that looked at the photo unless they copy a caption they were
shown; never kNN consensus's, which is a neighbour's caption and would point at that neighbour).

An identical copy without a human caption of its own is found by its twin's (collection scope; the hit's
``via`` names the twin): the same bytes are the same picture.

Documents are read once from the store's ``.npy`` snapshots (``text/<key>/document`` keyed
by ``hash_text(caption)``, ``image/<key>`` keyed by image sha256) and grouped into distinct
vectors per method, aligned with the sorted photo ids; a photo without a usable caption
(failed, empty, not embedded) is *missing*: it never appears in results and ranks below
every scored photo. A query the workspace already embedded (an evaluation query) is read from the
store, so search ranks it exactly as the evaluation did; any other query is embedded by the light
query encoder (``pipeline.query_encoder``: the text embedder exported to ONNX, no torch import) or,
where there is none, the text embedder itself, and the last few are remembered.

Identical vectors and ties
--------------------------
Each method's documents are a ``pipeline.distinct.DistinctRows``: every distinct caption
vector (or image vector, for ``clip``) is scored once per query and its score copied to every
photo that has it, so photos with the same caption text tie exactly on any CPU (``hybrid``
combines those copies elementwise, so photos with the same caption and the same image tie too;
a photo's best caption is a maximum, exact too). Photos are kept sorted by id, and every list
(``search``, ``like``, the evaluation's stored top ids, the TUI) orders by score descending, then
photo id ascending. ``rank_of`` and the evaluation never break a tie: the true photo gets its
expected rank under random tie-breaking (``pipeline.metrics``), e.g. 1.5 for a photo tied with one
other at the top.
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
from pipeline.errors import CapsearchError, ConfigError
from pipeline.hashing import hash_text
from pipeline.keys import HUMAN, clip_text_space, document_space, image_space, query_space
from pipeline.photo_documents import PhotoDocuments
from pipeline.snapshots import load_array
from pipeline.stage_keys import stage_hash
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.store import Store

ORACLE = "oracle"
CLIP = "clip"
HYBRID = "hybrid"
CAPTIONS = "captions"        # collection scope: every caption kind of every photo
IMAGE = "image"              # what matched when a photo is found by its image
EXTRA_METHODS = (CLIP, HYBRID, ORACLE)
SCOPES = ("collection", "targets")
PIXEL_CAPTIONERS = ("vlm-plain", "blip-base", "blip-large", "vit-gpt2")   # the full profile's: caption from pixels
NEIGHBOUR_CAPTIONER_KINDS = ("knn-consensus", "vlm-neighbours")           # work from captioned neighbours
ORACLE_RULE = "sha256('oracle:<id>') over the non-blank reference captions other than the query source"
_QUERY_MEMORY = 64


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
        if row.source_caption_idx is not None:
            out.setdefault(row.image_id, int(row.source_caption_idx))
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
    caption: str                     # the caption that matched (for clip: one of the photo's captions, if any)
    rank: int                        # 1 = best
    matched: str = ""                # which kind matched: 'human', a captioner's name, 'image', or 'image + <kind>';
                                     # by example also 'identical copy' and 'near-duplicate'
    via: str = ""                    # whose caption matched when not the photo's own (an identical copy: its twin)

    @property
    def matched_label(self) -> str:
        """What matched, as a person reads it: 'human (of <twin>)' for a caption of the photo's identical twin."""
        return f"{self.matched} (of {self.via})" if self.via else self.matched


@dataclass(frozen=True)
class LikeResult:
    """``SearchIndex.like``: the example (a photo id of the workspace, else None) and the photos most like it."""
    example: str
    example_id: str | None
    hits: list[Hit]
    by_captions: bool                # the example's captions took part (it has some, and so do photos)


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ConfigError(f"search scope '{scope}' is not one of {', '.join(SCOPES)}")
    return scope


class SearchIndex:
    """Every search method over one workspace's photos in one scope, loaded once (see the module docstring).

    ``include_empty`` keeps methods that have no document at all (the evaluation counts them as all
    missing); by default ``methods()`` lists only methods with something to find.
    """

    def __init__(self, ws: Workspace, *, scope: str | None = None, include_empty: bool = False,
                 text_embedder: Any = None, clip_embedder: Any = None, preload_queries: bool = False,
                 exact: bool = False):
        from pipeline.text_models import build_clip_embedder, build_query_encoder, build_text_embedder

        self.ws = ws
        self.cfg = ws.config
        self.store = ws.store
        self.scope = check_scope(scope or self.cfg.search.scope)
        self.text_embedder = text_embedder or build_text_embedder(self.cfg)
        # queries: the given embedder, else the light encoder (the same vectors without importing torch)
        self.query_encoder = text_embedder or build_query_encoder(self.cfg, self.text_embedder)
        if preload_queries and text_embedder is None:
            self.query_encoder.preload()          # opens while the documents load (a text search is coming)
        self.clip_embedder = clip_embedder if clip_embedder is not None else build_clip_embedder(self.cfg)
        ids = self.store.image_ids() if self.scope == "collection" else self.store.image_ids("target")
        self.photo_ids: list[str] = sorted(ids)           # ties list by photo id
        self.position = {t: i for i, t in enumerate(self.photo_ids)}
        self.captions: dict[str, dict[str, str]] = {}     # single-caption method -> photo id -> caption
        self.documents: dict[str, DistinctRows] = {}      # one document per photo (targets scope, clip, oracle)
        self.multi: dict[str, PhotoDocuments] = {}        # several per photo (collection scope captions)
        self.unavailable: dict[str, str] = {}             # method -> why it cannot be searched
        self._memory: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()                     # the TUI searches from worker threads
        self._queries: dict[str, tuple[str, str]] | None = None
        self._images: DistinctRows | None = None          # image vectors of every photo (search by example)
        self._own: np.ndarray | None = None               # which caption documents were written for their photo
        self._sha: np.ndarray | None = None               # every photo's sha256 (identical copies, by example)
        self._include_empty = include_empty
        above = self.cfg.index.approximate_above
        # past index.approximate_above photos, `captions` and `clip` go through the approximate index (see
        # "Approximate search" in the module docstring); exact=True (`--exact`) never does
        self.approximate = not exact and above > 0 and len(self.photo_ids) > above
        self._indexes: dict[str, Any] = {}                # method -> pipeline.vector_index.Approximate
        if self.scope == "collection":
            self._load_collection_methods()
        else:
            self._load_text_methods()
        self._load_clip()

    @property
    def target_ids(self) -> list[str]:
        """The photos this index ranks, in id order (the targets in the targets scope)."""
        return self.photo_ids

    # -- loading ---------------------------------------------------------------------------------
    def _text_snapshot(self) -> tuple[dict[str, int], np.ndarray | None]:
        space = document_space(self.text_embedder.key)
        if not self.store.has_space(space):
            return {}, None
        keys, matrix = load_array(self.store, space)
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
        self.documents[method] = DistinctRows.from_rows(len(self.photo_ids), doc, src, matrix)

    def _generated(self, captioner: str) -> dict[str, str] | None:
        try:
            h = stage_hash(self.ws, "caption", captioner)
        except CapsearchError as exc:
            self.unavailable[captioner] = str(exc)
            return None
        return {i: r.text for i, r in self.store.captions(captioner, h, status="ok").items() if r.text.strip()}

    def _load_text_methods(self) -> None:
        key_rows, matrix = self._text_snapshot()
        for captioner in self.cfg.enabled_captioners():
            ok = self._generated(captioner)
            if ok is not None:
                self._add_text_method(captioner, ok, key_rows, matrix)
        try:
            qh = stage_hash(self.ws, "queries")
        except CapsearchError as exc:
            self.unavailable[ORACLE] = str(exc)
            return
        self._add_text_method(ORACLE, oracle_captions(self.store, self.photo_ids, qh), key_rows, matrix)

    def _twins(self, human: dict[str, list[str]]) -> dict[str, str]:
        """Photo without a human caption -> the identical photo (same bytes) whose human captions it shares: the
        first by id that has some."""
        groups: dict[str, list[str]] = {}
        for img in self.store.images(ids=self.photo_ids):
            groups.setdefault(img.sha256, []).append(img.id)
        out: dict[str, str] = {}
        for members in groups.values():
            captioned = sorted(m for m in members if any(t.strip() for t in human.get(m, [])))
            if len(members) > 1 and captioned:
                out.update({m: captioned[0] for m in members if m not in captioned})
        return out

    def _load_collection_methods(self) -> None:
        """``captions`` and one method per captioner, over every photo: human captions (an identical copy without
        any: its twin's, listed as the twin's), then each captioner's."""
        key_rows, matrix = self._text_snapshot()
        human = self.store.reference_captions()
        twins = self._twins(human)
        hashes: dict[str, str] = {}             # each text hashed once for every method's documents

        def key_of(text: str) -> str:
            found = hashes.get(text)
            if found is None:
                found = hashes[text] = hash_text(text)
            return found

        generated = {c: got for c in self.cfg.enabled_captioners() if (got := self._generated(c)) is not None}
        docs: list[tuple[int, str, str, str]] = []
        for image_id in self.photo_ids:
            p = self.position[image_id]
            twin = twins.get(image_id, "")
            docs += [(p, HUMAN, t, twin) for t in human.get(twin or image_id, []) if t.strip()]
            docs += [(p, c, got[image_id], "") for c, got in generated.items() if image_id in got]
        dim = matrix.shape[1] if matrix is not None and matrix.ndim == 2 else 1
        self.multi[CAPTIONS] = PhotoDocuments.build(len(self.photo_ids), docs, key_rows, matrix, key_of, dim)
        for captioner in generated:
            mine = [d for d in docs if d[1] in (HUMAN, captioner)]
            self.multi[captioner] = PhotoDocuments.build(len(self.photo_ids), mine, key_rows, matrix, key_of, dim)
        self.unavailable[ORACLE] = ("the oracle is an evaluation method over the targets' held-out captions: "
                                    "search with --scope targets")

    def _load_clip(self) -> None:
        if self.clip_embedder is None:
            reason = (f"image embedder '{self.cfg.image_embedder.name}' has no text tower "
                      "(clip and hybrid need image_embedder.name = \"open_clip\")")
            self.unavailable[CLIP] = self.unavailable[HYBRID] = reason
            return
        space = image_space(self.clip_embedder.key)
        doc, src = [], []
        matrix = None
        if self.store.has_space(space):
            keys, matrix = load_array(self.store, space)
            key_rows = {k: i for i, k in enumerate(keys)}
            for img in self.store.images(ids=self.photo_ids):
                if img.sha256 in key_rows:
                    doc.append(self.position[img.id])
                    src.append(key_rows[img.sha256])
        # the stored vectors' width: reading the model's (``clip_embedder.dim``) imports open_clip and torch
        dim = matrix.shape[1] if matrix is not None and matrix.ndim == 2 else self.clip_embedder.dim
        self.documents[CLIP] = DistinctRows.from_rows(len(self.photo_ids), doc, src, matrix, dim=dim)
        hc = self.cfg.search.hybrid_captioner
        if hc not in self.documents and hc not in self.multi:
            self.unavailable[HYBRID] = (f"search.hybrid_captioner '{hc}' is not an enabled captioner "
                                        f"({', '.join(self.cfg.enabled_captioners())})")

    # -- methods -----------------------------------------------------------------------------------
    def _docs_present(self, method: str) -> int:
        if method in self.multi:
            return self.multi[method].n_present
        docs = self.documents.get(method)
        return -1 if docs is None else docs.n_present

    def _method_ok(self, method: str) -> bool:
        if method == HYBRID:
            hc = self.cfg.search.hybrid_captioner
            return HYBRID not in self.unavailable and self._method_ok(CLIP) and self._method_ok(hc)
        n = self._docs_present(method)
        return n >= 0 and (self._include_empty or n > 0)

    def methods(self) -> list[str]:
        """Searchable methods: (collection scope: ``captions``), captioners with caption embeddings, then clip and
        hybrid, then oracle (targets scope)."""
        first = [CAPTIONS] if self.scope == "collection" else []
        names = first + [c for c in self.cfg.enabled_captioners() if c in self.documents or c in self.multi]
        return [m for m in names + [CLIP, HYBRID, ORACLE] if self._method_ok(m)]

    def default_method(self) -> str:
        methods = self.methods()
        if not methods:
            raise CapsearchError(self.nothing_to_search())
        wanted = self.cfg.search.default_method
        if wanted and wanted in methods:
            return wanted
        return methods[0]

    def nothing_to_search(self) -> str:
        """Why no method has anything to search by text, and what will work (what a person reads when
        ``default_method`` finds none): read from the workspace, so it is true after a run too."""
        if not self.photo_ids:
            return ("no photos to search yet: add some with `capsearch data folder PATH` (or `data demo`, "
                    "`data flickr8k`), then `capsearch run`")
        like = ("`capsearch search --like PHOTO` finds photos by what they look like" if self._has_image_vectors()
                else "`capsearch run` embeds the photos, after which `capsearch search --like PHOTO` finds photos "
                     "by what they look like")
        docs = self.multi.get(CAPTIONS)
        written = (docs is not None and len(docs.kinds) > 0) or any(self.captions.get(m) for m in self.captions)
        if written:
            return ("the captions are not embedded yet: `capsearch run` (its embed-captions stage) embeds them; "
                    f"meanwhile {like}")
        from pipeline.applicability import no_captioned_photo

        enabled = self.cfg.enabled_captioners()
        # what the caption stage says: the neighbour-based captioners need captioned photos to work from
        blocked = {c: why for c in enabled if self.cfg.captioner(c).kind in NEIGHBOUR_CAPTIONER_KINDS
                   and (why := no_captioned_photo(self.store))}
        runnable = [c for c in enabled if c not in blocked]
        what = "no photo has a caption" if self.scope == "collection" else "no target photo has a caption"
        if runnable:
            return (f"{what} yet: `capsearch run` captions them with {', '.join(runnable)} and embeds the "
                    f"captions (`capsearch status` shows what is missing or failed); meanwhile {like}")
        pixel = [n for n in PIXEL_CAPTIONERS if n not in enabled]
        one = len(enabled) == 1
        told = (f"the enabled captioner{'' if one else 's'} {', '.join(enabled)} work{'s' if one else ''} from the "
                "captions of similar captioned photos, and no photo has a human caption"
                if enabled else "no captioner is enabled (captioners.enabled)")
        if self.cfg.profile == "lite":
            told += "; the lite profile has no captioner that writes a caption from the pixels"
        return (f"nothing to search by text: {what} ({told}). What will work: captions for some photos "
                "(`capsearch data folder PATH --captions FILE`, then `capsearch run`), or a captioner that looks at "
                f"the pixels ({', '.join(pixel)}: the full profile's; add it to captioners.enabled in "
                f"capsearch.toml, `capsearch models pull`, then `capsearch run`); meanwhile {like}")

    def _has_image_vectors(self) -> bool:
        try:
            self._image_documents()
        except CapsearchError:
            return False
        return True

    def check_method(self, method: str) -> None:
        if self._method_ok(method):
            return
        known = ", ".join(self.methods()) or "none yet"
        reason = self.unavailable.get(method)
        if reason is None and method == ORACLE:
            reason = "the oracle's reference captions are embedded by `capsearch evaluate`; run it first"
        elif reason is None and (method in self.documents or method in self.multi):
            reason = f"'{method}' has no embedded captions yet (run `capsearch embed-captions`)"
        raise CapsearchError(f"cannot search by '{method}': {reason or 'unknown method'}; available: {known}")

    def _missing_mask(self, method: str) -> np.ndarray:
        if method in self.multi:
            return self.multi[method].missing
        return self.documents[method].missing

    def missing(self, method: str) -> int:
        """Photos the method cannot rank (no usable caption or embedding)."""
        if method == HYBRID:
            caption = self._missing_mask(self.cfg.search.hybrid_captioner)
            clip = self.documents[CLIP].missing
            return int((clip | caption).sum()) if self.scope == "targets" else int(clip.sum())
        return int(self._missing_mask(method).sum())

    def caption(self, method: str, image_id: str) -> str:
        """A caption to show for a photo found by ``method`` (without a query: its first caption of that kind)."""
        source = self.cfg.search.hybrid_captioner if method in (CLIP, HYBRID) else method
        if self.scope == "collection":
            docs = self.multi.get(source) or self.multi.get(CAPTIONS)
            if docs is None or image_id not in self.position:
                return ""
            found = docs.documents_of(self.position[image_id])
            return docs.texts[found.start] if len(found) else ""
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
                space, texts[0], self.query_encoder.embed_queries))
        return self.query_encoder.embed_queries(list(texts))

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
    def _caption_scores(self, method: str, text_q: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(photo scores, document scores or None) of a caption method."""
        if method in self.multi:
            docs = self.multi[method]
            doc_scores = docs.document_scores(text_q)
            return docs.photo_scores(doc_scores), doc_scores
        return core.cosine_scores(text_q, self.documents[method]), None

    def score_matrix(self, method: str, text_q: np.ndarray | None, clip_q: np.ndarray | None) -> np.ndarray:
        """(n_queries, n_photos) scores, NaN where the method has no document."""
        if method == HYBRID:
            captions, _ = self._caption_scores(self.cfg.search.hybrid_captioner, text_q)
            return core.hybrid(captions, core.cosine_scores(clip_q, self.documents[CLIP]),
                               self.cfg.search.hybrid_weight, fill_missing=self.scope == "collection")
        if method == CLIP:
            return core.cosine_scores(clip_q, self.documents[CLIP])
        return self._caption_scores(method, text_q)[0]

    def top_k(self, method: str, text_q: np.ndarray | None, clip_q: np.ndarray | None,
              k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best k photo positions and scores per query (blocked search for single-document methods)."""
        if method == HYBRID or method in self.multi:
            return core.top_from_scores(self.score_matrix(method, text_q, clip_q), k)
        queries = clip_q if method == CLIP else text_q
        approx = self._approximate(method)
        if approx is not None:
            return self._approximate_documents(method, approx, queries, k)
        return core.top_k_batch(queries, self.documents[method], k,
                                block_size=max(1, (self.cfg.index.block_mb << 20) // (4 * self.documents[method].dim)))

    # -- approximate search ----------------------------------------------------------------------------
    def _approximate(self, method: str):
        """The approximate index of ``method`` when this search goes through one (``captions`` in the collection
        scope and ``clip``, past the threshold), built or brought up to date on first use; else None."""
        if not self.approximated(method):
            return None
        with self._lock:
            if method not in self._indexes:
                from pipeline.vector_index import Approximate, ensure

                if method == CLIP:
                    rows, space = self.documents[CLIP], image_space(self.clip_embedder.key)
                    sha = {img.id: img.sha256 for img in self.store.images(ids=self.photo_ids)}
                    keys = [sha[self.photo_ids[int(rows.members[rows.starts[r]])]] for r in range(rows.vectors.shape[0])]
                else:
                    docs = self.multi[CAPTIONS]
                    rows, space = docs.rows, document_space(self.text_embedder.key)
                    keys = [hash_text(docs.texts[int(rows.members[rows.starts[r]])]) for r in range(rows.vectors.shape[0])]
                index = ensure(self.store, f"search-{method}", space, keys, rows.vectors, self.cfg.index.probes)
                self._indexes[method] = Approximate(index, index.label_rows({key: r for r, key in enumerate(keys)}),
                                                    self.cfg.index.probes)
            return self._indexes[method]

    def prepare_approximate(self, methods: Sequence[str] = (CAPTIONS, CLIP)) -> list[Any]:
        """Build or update the approximate indexes of ``methods`` that this collection's searches go through (what
        the stages that change their vectors call, so that a search finds them current); their ``IndexInfo``."""
        out = []
        for method in methods:
            if self._method_ok(method) and (approx := self._approximate(method)) is not None:
                out.append(approx.index.info())
        return out

    def approximated(self, method: str) -> bool:
        """Whether ``method``'s searches go through the approximate index."""
        return self.approximate and method in (CAPTIONS, CLIP) and (method != CAPTIONS or method in self.multi)

    def recall(self, method: str) -> str:
        """The recall@10 its index measured, in words."""
        approx = self._approximate(method)
        value = approx.index.meta.get("recall_at_10") if approx is not None else None
        return "not measured" if value is None else f"{value:.3f}"

    def _approximate_documents(self, method: str, approx, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k photos of a single-document method: the index's candidates scored exactly, the usual order."""
        from pipeline.vector_index import CANDIDATES, rescore

        docs = self.documents[method]
        unit = core.l2_normalise(queries)
        rows, sc = rescore(queries, docs.vectors, approx.rows(unit, CANDIDATES * k), unit=False)
        idx, out = docs.best_documents(rows[:, :k], sc[:, :k], k)
        return idx, out

    def _approximate_photos(self, approx, text_q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top k photos of ``captions`` (one query): the photos of the index's candidate captions, each scored
        exactly by all of its captions (its best one), the usual order. Returns (positions, scores, document
        scores: NaN for documents of photos that were not candidates)."""
        from pipeline.vector_index import CANDIDATES, rescore

        docs = self.multi[CAPTIONS]
        rows = docs.rows
        cand, _ = rescore(text_q, rows.vectors, approx.rows(core.l2_normalise(text_q), CANDIDATES * k), unit=False)
        cand = cand[0][cand[0] >= 0]
        members = np.concatenate([rows.members[rows.starts[r]:rows.starts[r + 1]] for r in cand]) if cand.size \
            else np.zeros(0, dtype=np.int64)
        photos = np.unique(docs.photo[members])
        spans = [docs.documents_of(int(p)) for p in photos]
        mine = np.concatenate([np.arange(r.start, r.stop) for r in spans]) if spans else np.zeros(0, dtype=np.int64)
        doc_scores = np.full((1, docs.photo.size), np.nan, dtype=np.float32)
        present = mine[rows.owner[mine] >= 0]
        if present.size:
            uniq, inverse = np.unique(rows.owner[present], return_inverse=True)
            vecs = np.asarray(rows.vectors[uniq], dtype=np.float32)
            doc_scores[0, present] = (text_q[:1] @ vecs.T)[0][inverse.ravel()]
        photo_sc = np.full(photos.size, -np.inf, dtype=np.float32)
        for i, r in enumerate(spans):
            part = doc_scores[0, r.start:r.stop]
            if np.isfinite(part).any():
                photo_sc[i] = np.nanmax(part)
        order = np.lexsort((photos, -photo_sc))[:k]
        order = order[np.isfinite(photo_sc[order])]
        return photos[order][None, :], photo_sc[order][None, :], doc_scores

    def search(self, query: str, method: str | None = None, k: int = 10) -> list[Hit]:
        """The k best photos for a text query, best first (missing documents never appear)."""
        if not query.strip():
            return []
        if k < 1:
            raise CapsearchError(f"k must be at least 1, got {k}")
        method = method or self.default_method()
        self.check_method(method)
        text_q, clip_q = self.encode([query], method)
        source = self.cfg.search.hybrid_captioner if method == HYBRID else method
        doc_scores = None
        approx = self._approximate(method)
        if approx is not None and method == CAPTIONS:
            idx, sc, doc_scores = self._approximate_photos(approx, text_q, k)
        elif source in self.multi and text_q is not None:
            photo_scores, doc_scores = self._caption_scores(source, text_q)
            if method == HYBRID:
                scores = core.hybrid(photo_scores, core.cosine_scores(clip_q, self.documents[CLIP]),
                                     self.cfg.search.hybrid_weight, fill_missing=True)
            else:
                scores = photo_scores
            idx, sc = core.top_from_scores(scores, k)
        else:
            idx, sc = self.top_k(method, text_q, clip_q, k)
        hits = []
        for i, s in zip(idx[0], sc[0]):
            if i < 0 or not np.isfinite(s):
                break
            image_id = self.photo_ids[int(i)]
            caption, matched, via = self._matched(method, source, int(i),
                                                  doc_scores[0] if doc_scores is not None else None)
            hits.append(Hit(image_id, float(s), caption, len(hits) + 1, matched, via))
        return hits

    def _matched(self, method: str, source: str, position: int,
                 doc_scores: np.ndarray | None) -> tuple[str, str, str]:
        """(caption shown, kind that matched, whose caption it is when not the photo's own) for a hit at
        ``position``."""
        image_id = self.photo_ids[position]
        if method == CLIP:
            return self.caption(CLIP, image_id), IMAGE, ""
        if doc_scores is not None:
            docs = self.multi[source]
            best = docs.best_document(doc_scores, position)
            if best is None:                                   # hybrid: found by its image alone
                return self.caption(CLIP, image_id), IMAGE, ""
            kind = docs.kinds[best]
            return docs.texts[best], (f"{kind} + {IMAGE}" if method == HYBRID else kind), docs.via[best]
        kind = source if source != ORACLE else HUMAN
        return self.caption(method, image_id), (f"{kind} + {IMAGE}" if method == HYBRID else kind), ""

    def rank_of(self, query: str, method: str, image_id: str) -> float:
        """Expected rank (1 = top, ties shared) of ``image_id`` for ``query``; a missing document gets the
        bottom ranks."""
        from pipeline.metrics import rank_bounds

        self.check_method(method)
        if image_id not in self.position:
            what = "photo of this workspace" if self.scope == "collection" else "target photo of this workspace"
            raise CapsearchError(f"'{image_id}' is not a {what}")
        scores = self.score_matrix(method, *self.encode([query], method))
        return float(rank_bounds(scores, [self.position[image_id]]).expected[0])

    # -- search by example ----------------------------------------------------------------------------
    def _image_documents(self) -> DistinctRows:
        """Image vectors of every photo of the scope (the configured image embedder's, memory-mapped as stored;
        scores divide by ``_image_norms``: cosine), loaded once."""
        if self._images is None:
            from pipeline.embedders.registry import build_image_embedder

            space = image_space(build_image_embedder(self.cfg).key)
            doc, src, matrix = [], [], None
            if self.store.has_space(space):
                keys, matrix = load_array(self.store, space)      # memory-mapped: scored by cosine, not copied
                key_rows = {k: i for i, k in enumerate(keys)}
                for img in self.store.images(ids=self.photo_ids):
                    if img.sha256 in key_rows:
                        doc.append(self.position[img.id])
                        src.append(key_rows[img.sha256])
            if not doc:
                raise CapsearchError("no photo has an image embedding yet: run `capsearch embed-images` first")
            self._images = DistinctRows.from_rows(len(self.photo_ids), doc, src, matrix)
            norms = np.empty(self._images.vectors.shape[0], dtype=np.float32)
            from pipeline.distinct import row_blocks

            for pos, block in row_blocks(self._images.vectors):
                norms[pos] = np.linalg.norm(block, axis=1)
            self._image_norms = np.where(norms > 0, norms, 1.0).astype(np.float32)
        return self._images

    def _example(self, example: str) -> tuple[str | None, str, np.ndarray]:
        """(photo id or None, sha256, unit image vector) of an example given as a photo id or an image file."""
        from pathlib import Path

        from pipeline.embedders.registry import build_image_embedder
        from pipeline.hashing import sha256_file

        row = self.store.image(example)
        path: Path | None = None
        if row is None:
            path = Path(example).expanduser()
            if not path.is_file():
                raise CapsearchError(f"'{example}' is neither a photo of this workspace nor an image file")
            path = path.resolve()
            root = (self.store.get_meta("collection") or {}).get("root")
            if root:
                try:
                    row = self.store.image(path.relative_to(Path(root).resolve()).as_posix())
                except ValueError:
                    row = None
        embedder = build_image_embedder(self.cfg)
        space = image_space(embedder.key)
        sha = row.sha256 if row is not None else sha256_file(path)
        _, stored = self.store.get_vectors(space, [sha])
        if len(stored):
            vector = stored[0]
        else:
            if path is None:
                raise CapsearchError(f"'{example}' has no image embedding yet: run `capsearch embed-images` first")
            errors: list[str] = []
            vectors, ok = embedder.embed_paths([path], on_error=lambda _p, reason: errors.append(reason))
            if not ok[0]:
                raise CapsearchError(f"cannot read {path} as a photo: {errors[0] if errors else 'unknown error'}")
            vector = vectors[0]
        return ((row.id if row is not None else None), sha,
                core.l2_normalise(np.asarray(vector, dtype=np.float32)[None, :]))

    def own_descriptions(self) -> np.ndarray:
        """Per document of ``captions`` (collection scope): whether it was written for its photo, so that it may
        count as evidence of what the photo shows. Human captions are (an identical copy's twin's too: the same
        picture); so is a caption of a captioner that looked at the photo, unless it is a copy of a caption it
        was shown (``pipeline.caption_metrics.copying``: what the copy rate counts). kNN consensus copies a
        neighbour's caption by design: never."""
        if self._own is None:
            docs = self.multi.get(CAPTIONS)
            own = np.zeros(0 if docs is None else len(docs.kinds), dtype=bool)
            if docs is not None:
                kinds = np.array(docs.kinds, dtype=object)
                own[kinds == HUMAN] = True
                for captioner in set(docs.kinds) - {HUMAN}:
                    if self.cfg.captioner(captioner).kind == "knn-consensus":
                        continue
                    mine = np.flatnonzero(kinds == captioner)
                    own[mine] = ~self._copied(captioner, docs, mine)
            self._own = own
        return self._own

    def _copied(self, captioner: str, docs: PhotoDocuments, mine: np.ndarray) -> np.ndarray:
        from pipeline.caption_metrics.copying import copy_and_overlap, shown_captions

        ids = [self.photo_ids[int(docs.photo[j])] for j in mine]
        shown, _ = shown_captions(self.ws, captioner, ids)
        return np.array([copy_and_overlap(docs.texts[j], shown.get(i, []))[0] == 1.0 for j, i in zip(mine, ids)],
                        dtype=bool)

    def like(self, example: str, k: int = 10) -> LikeResult:
        """The k photos most like ``example`` (a photo id, or an image file inside the collection or not), the
        example itself left out, in this order: its identical copies (the same bytes), then its near-duplicates
        (image similarity at least ``neighbours.near_duplicate_threshold``: a resized or re-encoded copy), then
        the rest by image similarity, combined (``search.hybrid``) with caption similarity where the example and
        the photo both have captions written for them (``own_descriptions``: a caption copied from a neighbour
        says what the neighbour shows, not the photo). Each tier by score, then photo id."""
        if k < 1:
            raise CapsearchError(f"k must be at least 1, got {k}")
        example_id, sha, vector = self._example(example)
        images = self._image_documents()
        image_scores = images.expand(images.score(vector) / self._image_norms)     # cosine: the vectors as stored
        scores = image_scores
        captions = self.multi.get(CAPTIONS)
        inside = example_id is not None and example_id in self.position
        by_captions = False
        doc_scores = None
        if inside and captions is not None and captions.photo.size:
            own = self.own_descriptions()
            mine = [j for j in captions.documents_of(self.position[example_id])
                    if own[j] and not captions.rows.missing[j]]
            if mine:
                vectors = captions.rows.vectors[captions.rows.owner[mine]]
                with np.errstate(all="ignore"):
                    doc_scores = np.nanmax(captions.document_scores(vectors), axis=0, keepdims=True)
                doc_scores[0, ~own] = np.nan
                caption_scores = captions.photo_scores(doc_scores)
                caption_scores[0, self.position[example_id]] = np.nan
                if np.isfinite(caption_scores).any():
                    scores = core.hybrid(caption_scores, image_scores, self.cfg.search.hybrid_weight,
                                         fill_missing=True)
                    by_captions = True
        scores = scores[0].astype(np.float32, copy=True)
        tier = np.full(len(self.photo_ids), 2, dtype=np.int8)
        tier[image_scores[0] >= self.cfg.neighbours.near_duplicate_threshold] = 1
        tier[self._same_bytes(sha)] = 0
        if inside:
            scores[self.position[example_id]] = np.nan
        ranked = [int(i) for i in np.lexsort((np.arange(len(scores)), -np.nan_to_num(scores, nan=-np.inf), tier))
                  if np.isfinite(scores[i])][:k]
        hits = []
        for i in ranked:
            image_id = self.photo_ids[i]
            matched = ("identical copy", "near-duplicate", IMAGE)[tier[i]]
            first = captions.documents_of(i) if captions is not None else range(0)
            caption, via = (captions.texts[first.start], captions.via[first.start]) if len(first) else \
                (self.caption(CAPTIONS, image_id), "")
            if tier[i] == 2 and by_captions and doc_scores is not None:
                best = captions.best_document(doc_scores[0], i)
                if best is not None:
                    matched, caption, via = f"{IMAGE} + {captions.kinds[best]}", captions.texts[best], captions.via[best]
            hits.append(Hit(image_id, float(scores[i]), caption, len(hits) + 1, matched, via))
        return LikeResult(example, example_id, hits, by_captions)

    def _same_bytes(self, sha: str) -> np.ndarray:
        """Which photos of the scope are the same bytes as ``sha``."""
        if self._sha is None:
            by_id = {img.id: img.sha256 for img in self.store.images(ids=self.photo_ids)}
            self._sha = np.array([by_id.get(i, "") for i in self.photo_ids], dtype=object)
        return self._sha == sha

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
                self._queries.setdefault(_normalise(row.text), (row.image_id, row.kind))
        return self._queries.get(_normalise(text))


def prepare_search_indexes(ws: Workspace, methods: Sequence[str], say: Callable[[str], None] | None = None) -> None:
    """After a stage changed the vectors ``methods`` search: bring their approximate indexes up to date when the
    collection is past ``index.approximate_above`` (nothing below it)."""
    above = ws.config.index.approximate_above
    if CLIP in methods and ws.config.image_embedder.name != "open_clip":
        methods = [m for m in methods if m != CLIP]        # no text tower: nothing searches the images by text
    if not methods or above <= 0 or ws.store.count_images() <= above:
        return
    index = SearchIndex(ws, scope="collection")
    for info in index.prepare_approximate(methods):
        recall = "not measured" if info.recall_at_10 is None else f"{info.recall_at_10:.3f}"
        if say:
            say(f"approximate index {info.name}: {info.rows:,} vectors, recall@10 {recall} at {info.probes} probes")


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())
