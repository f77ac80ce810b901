"""Read-only views of a workspace for browsing (the TUI): photos, their neighbours and prompts, every
captioner's caption, the evaluation table and the queries a method missed.

Rows are looked up under the *current* configuration's hashes first; when a stage has not been run
for the current configuration yet, the newest rows written by an earlier configuration are shown and
marked ``stale``. Nothing here writes to the store.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pipeline.errors import CapsearchError
from pipeline.keys import DUPLICATE_KINDS
from pipeline.stage_keys import optional_stage_hash
from pipeline.store_rows import EvaluationRow, PromptRow
from pipeline.workspace import Workspace

METRIC_ORDER_TAIL = ("MRR", "MedR")


@dataclass(frozen=True)
class PhotoSummary:
    id: str
    split: str | None
    caption: str                      # the first reference caption ('' when the photo has none)
    search_text: str                  # lower-cased id and every caption, for filtering


@dataclass(frozen=True)
class NeighbourView:
    id: str
    path: Path | None
    score: float
    near_duplicate: bool              # a duplicate of the photo (exact or near): passed over by prompts and consensus
    captions: tuple[str, ...]
    duplicate: str = ""               # '' | 'near-duplicate' | 'exact duplicate'


@dataclass(frozen=True)
class CaptionView:
    captioner: str
    text: str
    status: str                       # 'ok' | 'empty' | 'failed' | 'missing'
    error: str | None = None
    model: str | None = None
    stale: bool = False               # written under an earlier configuration


@dataclass(frozen=True)
class PhotoDetail:
    id: str
    path: Path | None
    width: int
    height: int
    split: str | None
    reference_captions: tuple[str, ...]
    neighbours: tuple[NeighbourView, ...]
    neighbours_stale: bool
    prompt: str | None
    prompt_warning: str | None
    prompt_stale: bool
    captions: tuple[CaptionView, ...]


@dataclass
class EvaluationTable:
    eval_hash: str | None
    stale: bool
    methods: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    values: dict[tuple[str, str, str], EvaluationRow] = field(default_factory=dict)   # (method, kind, metric)
    not_applicable: dict[str, str] = field(default_factory=dict)   # method -> why it has nothing to rank

    def get(self, method: str, kind: str, metric: str) -> EvaluationRow | None:
        return self.values.get((method, kind, metric))

    @property
    def empty(self) -> bool:
        return not self.values


@dataclass(frozen=True)
class MissedQuery:
    image_id: str                     # the true photo
    kind: str
    query: str
    rank: float                       # expected rank of the true photo (1 = top)
    top_ids: tuple[str, ...]


def _metric_sort_key(metric: str) -> tuple[int, float, str]:
    if metric.startswith("R@") and metric[2:].isdigit():
        return (0, int(metric[2:]), metric)
    if metric in METRIC_ORDER_TAIL:
        return (1, METRIC_ORDER_TAIL.index(metric), metric)
    return (2, 0, metric)


def filter_photos(photos: list[PhotoSummary], text: str) -> list[PhotoSummary]:
    """Photos whose id or captions contain every word of ``text`` (case-insensitive)."""
    words = text.lower().split()
    if not words:
        return list(photos)
    return [p for p in photos if all(w in p.search_text for w in words)]


class Browser:
    """Read-only queries over one workspace. Cheap to build; make a new one after a run."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.store = ws.store
        self._hashes: dict[tuple[str, str], str | None] = {}
        self._texts: dict[str, dict[str, str]] = {}

    # -- configuration hashes ------------------------------------------------------------------
    def _stage_hash(self, name: str, variant: str = "") -> str | None:
        """The stage's current configuration hash (None where the configuration allows none), read once per
        Browser."""
        if (name, variant) not in self._hashes:
            if name == "evaluate":
                from pipeline.evaluation import current_eval_hash   # numpy and the search: not at the TUI's start

                self._hashes[(name, variant)] = current_eval_hash(self.ws)
            else:
                self._hashes[(name, variant)] = optional_stage_hash(self.ws, name, variant)
        return self._hashes[(name, variant)]

    @cached_property
    def collection_root(self) -> Path | None:
        from pipeline.locations import is_url

        meta = self.store.get_meta("collection") or {}
        # photos behind a URL (s3://...) are not drawn: the TUI reads local files only
        return Path(meta["root"]) if meta.get("root") and not is_url(meta["root"]) else None

    def photo_path(self, image_id: str, relative: str | None = None) -> Path | None:
        """The photo's file on disk (None when the collection root is unknown)."""
        root = self.collection_root
        return root / (relative or image_id) if root is not None else None

    # -- photos --------------------------------------------------------------------------------
    def target_photos(self) -> list[PhotoSummary]:
        """The target photos (those captioned and searched), sorted by id."""
        ids = self.store.image_ids("target")
        texts = self.store.target_caption_texts()
        out = []
        for image_id in ids:
            caps = texts.get(image_id, [])
            out.append(PhotoSummary(image_id, "target", caps[0] if caps else "",
                                    " ".join([image_id, *caps]).lower()))
        return out

    def photo_detail(self, image_id: str) -> PhotoDetail:
        row = self.store.image(image_id)
        if row is None:
            raise CapsearchError(f"photo '{image_id}' is not in the workspace")
        neighbours, n_stale = self._neighbours(image_id)
        prompt, p_stale = self._prompt(image_id)
        return PhotoDetail(
            id=row.id, path=self.photo_path(row.id, row.path), width=row.width, height=row.height, split=row.split,
            reference_captions=tuple(self.store.reference_captions([image_id]).get(image_id, [])),
            neighbours=neighbours, neighbours_stale=n_stale,
            prompt=prompt.text if prompt else None, prompt_warning=prompt.warning if prompt else None,
            prompt_stale=p_stale, captions=self._captions(image_id),
        )

    def _neighbours(self, image_id: str) -> tuple[tuple[NeighbourView, ...], bool]:
        current = self._stage_hash("neighbours")
        rows = self.store.neighbours(current, [image_id]).get(image_id, []) if current else []
        stale = False
        if not rows:
            latest = self.store.latest_neighbours_hash(image_id)
            if latest is None:
                return (), False
            rows = self.store.neighbours(latest, [image_id]).get(image_id, [])
            stale = True
        caps = self.store.reference_captions([r.id for r in rows])
        paths = {r.id: r.path for r in self.store.images(ids=[r.id for r in rows])}
        views = tuple(
            NeighbourView(r.id, self.photo_path(r.id, paths.get(r.id)), float(r.score), bool(r.duplicate),
                          tuple(caps.get(r.id, [])), DUPLICATE_KINDS.get(r.duplicate, ""))
            for r in rows
        )
        return views, stale

    def _prompt(self, image_id: str) -> tuple[PromptRow | None, bool]:
        current = self._stage_hash("prompts")
        if current:
            found = self.store.prompt_for(image_id, current)
            if found:
                return found, False
        found = self.store.prompt_for(image_id)
        return found, found is not None

    def _captions(self, image_id: str) -> tuple[CaptionView, ...]:
        enabled = self.ws.config.enabled_captioners()
        rows = self.store.captions_for_image(image_id)
        names = list(enabled) + sorted({r.captioner for r in rows} - set(enabled))
        out = []
        for name in names:
            mine = [r for r in rows if r.captioner == name]
            current = self._stage_hash("caption", name) if name in enabled else None
            chosen = next((r for r in mine if r.config_hash == current), None)
            stale = chosen is None
            if chosen is None and mine:
                chosen = mine[0]
            if chosen is None:
                out.append(CaptionView(name, "", "missing"))
            else:
                out.append(CaptionView(name, chosen.text, chosen.status, chosen.error, chosen.model, stale))
        return tuple(out)

    # -- evaluation --------------------------------------------------------------------------------
    def _eval_hash(self) -> tuple[str | None, bool]:
        current = self._stage_hash("evaluate")
        if current and self.store.evaluations(current):
            return current, False
        latest = self.store.latest_eval_hash()
        return latest, latest is not None

    def evaluation(self) -> EvaluationTable:
        eval_hash, stale = self._eval_hash()
        table = EvaluationTable(eval_hash, stale)
        if eval_hash is None:
            return table
        methods: list[str] = []
        kinds: list[str] = []
        metrics: set[str] = set()
        for r in self.store.evaluations(eval_hash):
            if r.method not in methods:
                methods.append(r.method)
            if r.query_kind not in kinds:
                kinds.append(r.query_kind)
            metrics.add(r.metric)
            table.values[(r.method, r.query_kind, r.metric)] = r
        order = {k: i for i, k in enumerate(("short", "detail"))}
        table.not_applicable = dict((self.store.get_meta(f"evaluation/{eval_hash}") or {}).get("not_applicable", {}))
        table.methods = methods
        table.kinds = sorted(kinds, key=lambda k: (order.get(k, 99), k))
        table.metrics = sorted(metrics, key=_metric_sort_key)
        return table

    def missed_queries(self, method: str, kind: str, k: int = 10) -> list[MissedQuery]:
        """Evaluation queries of one kind whose true photo ``method`` did not rank in its top ``k``, worst first."""
        eval_hash, _ = self._eval_hash()
        if eval_hash is None:
            return []
        texts = self._query_texts(kind)
        out = [
            MissedQuery(r.image_id, kind, texts.get(r.image_id, ""), float(r.rank), r.top_ids)
            for r in self.store.rankings(eval_hash, method, kind) if r.rank > k
        ]
        return sorted(out, key=lambda m: (-m.rank, m.image_id))

    def _query_texts(self, kind: str) -> dict[str, str]:
        if kind not in self._texts:
            self._texts[kind] = self._load_query_texts(kind)
        return self._texts[kind]

    def _load_query_texts(self, kind: str) -> dict[str, str]:
        current = self._stage_hash("queries")
        rows = self.store.queries(current, kind, status="ok") if current else []
        if not rows:
            latest = self.store.latest_queries_hash()
            rows = self.store.queries(latest, kind, status="ok") if latest else []
        return {r.image_id: r.text for r in rows}

    def evaluation_queries(self, limit: int = 50) -> list[tuple[str, str, str]]:
        """(query, true photo, kind) of the first evaluation queries, for trying search out."""
        out = []
        for kind in ("short", "detail"):
            out.extend((text, image_id, kind) for image_id, text in sorted(self._query_texts(kind).items()))
        return out[:limit]
