"""The approximate index: what search and neighbour lookup go through past ``index.approximate_above`` photos.

**What it is.** A FAISS ``IndexIVFScalarQuantizer``: the unit vectors are split into about 4 sqrt(n) lists by
k-means (trained on a fixed sample, fixed seed), each vector stored in its list as 8 bits per dimension (a
quarter of the float32 vectors). A query visits the ``index.probes`` lists whose centres are nearest and
returns ``CANDIDATES`` x k candidates; the caller re-scores them exactly from the float32 vectors (the
memory-mapped snapshot) and orders them by the rule every list follows (score descending, then photo id), so
scores and ties are those of exact search and only *which* photos are considered is approximate. Why this
index and not HNSW or usearch: ``docs/architecture.md`` ("The approximate index"), measured with
``bench/ann_choice.py``.

**Members and labels.** An index holds the vectors of a set of keys (image sha256 or caption text hashes, the
snapshot's keys); label i is ``keys[i]``. ``ensure`` compares the keys with the ones wanted now: removed keys
are taken out (``remove_ids``) and new ones added with new labels, without touching the rest, unless more than
``REBUILD_SHARE`` of the built size changed (its lists were trained on another collection), the embedder
changed (another vector space), or the file cannot be trusted: then it is built again.

**Files** (beside the snapshots, ``arrays/index/``), checked like them: ``<name>.<generation>.faiss`` (the
index) and ``<name>.<generation>.keys.json`` (the labels' keys), written once under temporary names, fsynced
and renamed; the manifest ``<name>.json`` (space, generation, the two files' sizes and CRC-32, the build's
settings and measured recall) replaced atomically after them. A file that does not match its manifest, a
manifest that cannot be read, or keys of another generation: rebuilt with a one-line notice.

**Recall.** After every build or update, recall@10 is measured on ``RECALL_QUERIES`` members (a fixed
sample, each query's own entry left out): the share of exact search's top 10 that the index finds, at the
configured probes. ``capsearch status`` shows it (``index_infos``).

**Determinism.** For a given index file the results are the same on every run: the lists visited, the
candidates and their exact re-scoring depend only on the file and the query. (Two builds on different CPUs may
differ in the last bits of the k-means centres, so in which list a borderline vector sits.)
"""
from __future__ import annotations

import json
import secrets
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from pipeline.atomic import atomic_write, fsync_dir, read_json_object, write_text
from pipeline.distinct import RowSubset, block_rows, row_blocks
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.store import Store

FORMAT = 1
KIND = "faiss-ivf-sq8"
CANDIDATES = 4              # candidates per wanted result, re-scored exactly
REBUILD_SHARE = 0.25        # changed keys (added + removed) since the build above this share of it: build again
RECALL_QUERIES = 200
RECALL_K = 10
TRAIN_PER_LIST = 40         # k-means training sample: this many vectors per list (FAISS asks at least 39)
_SEED = 1234


class IndexDamaged(Exception):
    """An index file or manifest that cannot be trusted; the text says why (one line)."""


@dataclass(frozen=True)
class IndexInfo:
    """What ``status`` shows of an index: its size, settings and measured recall."""
    name: str
    space: str
    kind: str
    rows: int
    lists: int
    probes: int
    recall_at_10: float | None      # at ``probes``, on RECALL_QUERIES members
    built_rows: int                 # rows when its lists were trained
    changed_since_build: int        # keys added or removed by updates since
    seconds: float                  # the last build or update, recall measurement included
    bytes: int
    updated: str                    # UTC time of the last build or update

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError("the approximate index needs FAISS, which is not installed: pip install "
                          "'capsearch[faiss]' (faiss-cpu), or set index.approximate_above = 0 (always exact)") from None
    return faiss


def index_folder(store: "Store") -> Path:
    return store.arrays_dir / "index"


def lists_for(n: int) -> int:
    """IVF lists for n vectors: about 4 sqrt(n), at least 39 training vectors each (FAISS's minimum)."""
    return int(max(1, min(round(4 * np.sqrt(max(n, 1))), n // 39)))


def _unit(block: np.ndarray, own: bool = False) -> np.ndarray:
    """The rows scaled to unit length; in place when ``own`` (a fresh float32 array, e.g. a gather)."""
    block = np.ascontiguousarray(block, dtype=np.float32)
    if not own or not block.flags.writeable:
        block = block.copy()
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    block /= np.where(norms > 0, norms, 1.0)
    return block


class VectorIndex:
    """An IVF index over the unit vectors of ``keys`` (label i is ``keys[i]``; None where removed)."""

    def __init__(self, name: str, space: str, index: Any, keys: list[str | None], meta: dict[str, Any]):
        self.name, self.space, self.index, self.keys, self.meta = name, space, index, keys, meta
        self._label: dict[str, int] | None = None

    # -- building ----------------------------------------------------------------------------------------
    @classmethod
    def build(cls, name: str, space: str, keys: Sequence[str], vectors: "np.ndarray | RowSubset",
              probes: int) -> "VectorIndex":
        """Train the lists on a fixed sample of ``vectors`` (aligned with ``keys``) and add them all."""
        faiss = _faiss()
        t0 = time.perf_counter()
        n, dim = vectors.shape
        nlist = lists_for(n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = _SEED
        sample = np.sort(np.random.default_rng(_SEED).choice(n, min(n, TRAIN_PER_LIST * nlist), replace=False))
        index.train(_unit(np.asarray(vectors[sample], dtype=np.float32), own=True))
        for pos, block in row_blocks(vectors):
            index.add_with_ids(_unit(block), pos)
        meta = {"kind": KIND, "lists": nlist, "probes": probes, "built_rows": n, "changed_since_build": 0}
        out = cls(name, space, index, list(keys), meta)
        out.meta["build_seconds"] = time.perf_counter() - t0
        return out

    def update(self, keys: Sequence[str], vectors: "np.ndarray | RowSubset") -> tuple[int, int]:
        """Make the members ``keys`` (with ``vectors``): remove the keys that left, add the new ones.
        Returns (added, removed)."""
        wanted = {k: i for i, k in enumerate(keys)}
        label = self.labels()
        gone = [label[k] for k in label if k not in wanted]
        new = [i for k, i in wanted.items() if k not in label]
        if gone:
            self.index.remove_ids(np.asarray(sorted(gone), dtype=np.int64))
            for g in gone:
                self.keys[g] = None
        if new:
            new_rows = np.asarray(new, dtype=np.int64)
            for start in range(0, new_rows.size, block_rows(vectors.shape[1])):
                part = new_rows[start:start + block_rows(vectors.shape[1])]
                first = len(self.keys)
                self.keys.extend(keys[i] for i in part)
                self.index.add_with_ids(_unit(np.asarray(vectors[part], dtype=np.float32), own=True),
                                        np.arange(first, first + part.size, dtype=np.int64))
        self._label = None
        self.meta["changed_since_build"] = int(self.meta.get("changed_since_build", 0)) + len(gone) + len(new)
        return len(new), len(gone)

    # -- reading -----------------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    def labels(self) -> dict[str, int]:
        if self._label is None:
            self._label = {k: i for i, k in enumerate(self.keys) if k is not None}
        return self._label

    def label_rows(self, key_row: dict[str, int]) -> np.ndarray:
        """For every label, the caller's row of its key (-1 for a key the caller does not have)."""
        return np.fromiter((key_row.get(k, -1) if k is not None else -1 for k in self.keys),
                           dtype=np.int64, count=len(self.keys))

    def candidates(self, queries: np.ndarray, n: int, probes: int | None = None) -> np.ndarray:
        """(n_queries, n) labels of the nearest entries the lists give (-1 where fewer); queries unit rows."""
        faiss = _faiss()
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.rows == 0 or n < 1:
            return np.full((q.shape[0], max(n, 0)), -1, dtype=np.int64)
        params = faiss.SearchParametersIVF(nprobe=int(probes or self.meta["probes"]))
        _, labels = self.index.search(q, int(n), params=params)
        return labels.astype(np.int64, copy=False)

    def info(self) -> IndexInfo:
        return _info(self.name, self.space, self.rows, self.meta)

    # -- recall ------------------------------------------------------------------------------------------
    def measure_recall(self, keys: Sequence[str], vectors: "np.ndarray | RowSubset", probes: int) -> float | None:
        """Recall@10 of the index against exact search, on a fixed sample of members as queries (each one's own
        entry left out of both lists), after exact re-scoring of the candidates as searches do."""
        n = vectors.shape[0]
        if n <= RECALL_K + 1:
            return None
        pick = np.sort(np.random.default_rng(_SEED + 1).choice(n, min(n, RECALL_QUERIES), replace=False))
        queries = _unit(np.asarray(vectors[pick], dtype=np.float32), own=True)
        kk = RECALL_K + 1
        best_s = np.full((pick.size, 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((pick.size, 0), dtype=np.int64)
        for pos, block in row_blocks(vectors):
            s = queries @ _unit(block).T
            idx = np.broadcast_to(pos, s.shape)
            s = np.concatenate([best_s, s], axis=1)
            idx = np.concatenate([best_i, idx], axis=1)
            top = np.argsort(-s, axis=1, kind="stable")[:, :kk]
            best_s, best_i = np.take_along_axis(s, top, axis=1), np.take_along_axis(idx, top, axis=1)
        row_of_label = self.label_rows({k: i for i, k in enumerate(keys)})
        found = self.candidates(queries, CANDIDATES * kk, probes)
        hits = 0
        for r, q in enumerate(pick):
            rows = row_of_label[found[r][found[r] >= 0]]
            rows = rows[(rows >= 0) & (rows != q)]
            if rows.size:
                exact = np.asarray(vectors[rows], dtype=np.float32)
                sc = _unit(exact, own=True) @ queries[r]
                rows = rows[np.lexsort((rows, -sc))][:RECALL_K]
            truth = [int(i) for i in best_i[r] if i != q][:RECALL_K]
            hits += len(set(rows.tolist()) & set(truth))
        return hits / (pick.size * RECALL_K)

    # -- files -------------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the index and its keys as a new generation, then the manifest that names them."""
        faiss = _faiss()
        folder.mkdir(parents=True, exist_ok=True)
        generation = secrets.token_hex(8)
        data = folder / f"{self.name}.{generation}.faiss"
        keys_file = folder / f"{self.name}.{generation}.keys.json"
        checks: dict[str, Any] = {}
        with atomic_write(data, "wb") as fh:
            crc = _CrcWriter(fh)
            faiss.write_index(self.index, faiss.PyCallbackIOWriter(crc.write))
        checks["index"] = {"file": data.name, "bytes": crc.size, "crc32": f"{crc.crc:08x}"}
        text = json.dumps(self.keys, separators=(",", ":")).encode("utf-8")
        with atomic_write(keys_file, "wb") as fh:
            fh.write(text)
        checks["keys"] = {"file": keys_file.name, "bytes": len(text), "crc32": f"{zlib.crc32(text):08x}"}
        fsync_dir(folder)
        self.meta.update(bytes=crc.size, updated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
        manifest = {"format": FORMAT, "name": self.name, "space": self.space, "generation": generation,
                    "rows": self.rows, "files": checks, **self.meta}
        write_text(folder / f"{self.name}.json", json.dumps(manifest, separators=(",", ":")))
        for path in folder.glob(f"{self.name}.*"):
            if path.name != f"{self.name}.json" and generation not in path.name:
                _unlink(path)
        fsync_dir(folder)


class _CrcWriter:
    def __init__(self, fh):
        self.fh, self.crc, self.size = fh, 0, 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        return len(data)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def read_manifest(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    m = read_json_object(path, IndexDamaged)
    if m is not None and (m.get("format") != FORMAT or m.get("name") != name):
        raise IndexDamaged(f"{path.name} is not an index manifest of format {FORMAT}")
    return m


def _checked_bytes(folder: Path, check: dict[str, Any], generation: str) -> bytes:
    name = str(check["file"])
    if generation not in name:
        raise IndexDamaged(f"the manifest names {name}, not a file of generation {generation}")
    try:
        data = (folder / name).read_bytes()
    except FileNotFoundError:
        raise IndexDamaged(f"{name} is missing") from None
    if len(data) != int(check["bytes"]):
        raise IndexDamaged(f"{name} is {'empty' if not data else f'{len(data)} bytes'}, expected {check['bytes']}")
    if f"{zlib.crc32(data):08x}" != check["crc32"]:
        raise IndexDamaged(f"{name} does not match its checksum (changed or damaged on disk)")
    return data


def load(folder: Path, name: str) -> VectorIndex | None:
    """The stored index ``name``, checked (None when there is none); raises IndexDamaged."""
    m = read_manifest(folder, name)
    if m is None:
        return None
    faiss = _faiss()
    try:
        files, generation = m["files"], str(m["generation"])
        keys = json.loads(_checked_bytes(folder, files["keys"], generation))
        raw = _checked_bytes(folder, files["index"], generation)
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexDamaged(f"{name}.json lacks a field or names unreadable keys ({exc})") from None
    try:
        index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexDamaged(f"{files['index']['file']} cannot be read by FAISS: {str(exc).splitlines()[0]}") from None
    del raw
    if not isinstance(keys, list) or len(keys) < index.ntotal or int(m.get("rows", -1)) != index.ntotal:
        raise IndexDamaged(f"{name}: {len(keys) if isinstance(keys, list) else 'no'} keys for {index.ntotal} vectors")
    meta = {k: v for k, v in m.items() if k not in ("format", "name", "space", "generation", "rows", "files")}
    return VectorIndex(name, str(m["space"]), index, keys, meta)


def index_infos(store: "Store") -> list[IndexInfo]:
    """Every stored index's manifest as an ``IndexInfo`` (unreadable ones left out): what ``status`` shows."""
    folder = index_folder(store)
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.endswith(".keys.json"):
            continue
        try:
            m = read_manifest(folder, path.name[:-len(".json")])
        except IndexDamaged:
            continue
        if m is not None:
            out.append(_info(str(m["name"]), str(m.get("space", "")), int(m.get("rows", 0)), m))
    return out


def _info(name: str, space: str, rows: int, m: dict[str, Any]) -> IndexInfo:
    return IndexInfo(name, space, m.get("kind", KIND), rows, int(m.get("lists", 0)), int(m.get("probes", 0)),
                     m.get("recall_at_10"), int(m.get("built_rows", 0)), int(m.get("changed_since_build", 0)),
                     float(m.get("seconds", 0.0)), int(m.get("bytes", 0)), str(m.get("updated", "")))


def ensure(store: "Store", name: str, space: str, keys: Sequence[str], vectors: "np.ndarray | RowSubset",
           probes: int, notice: Callable[[str], None] | None = None) -> VectorIndex:
    """The index ``name`` over ``keys`` (with ``vectors``, aligned) in ``space``: loaded and checked, brought up
    to date incrementally, or built (see the module docstring); saved whenever it changed."""
    notice = notice if notice is not None else store.notice
    folder = index_folder(store)
    t0 = time.perf_counter()
    try:
        current = load(folder, name)
    except IndexDamaged as exc:
        notice(f"index {name} was damaged ({exc}); rebuilt")
        current = None
    wanted = set(keys)
    if current is not None and current.space != space:
        current = None                                   # another embedder: another vector space
    if current is not None:
        have = current.labels()
        changed = len(wanted.symmetric_difference(have))
        total = int(current.meta.get("changed_since_build", 0)) + changed
        if total > REBUILD_SHARE * max(1, int(current.meta.get("built_rows", 0))):
            current = None
        elif changed == 0 and current.meta.get("probes") == probes:
            return current
        else:
            current.update(list(keys), vectors)
            current.meta["probes"] = probes
    if current is None:
        current = VectorIndex.build(name, space, list(keys), vectors, probes)
    current.meta["recall_at_10"] = current.measure_recall(list(keys), vectors, probes)
    current.meta["seconds"] = time.perf_counter() - t0
    current.save(folder)
    return current


@dataclass
class Approximate:
    """An index made usable for one set of distinct vectors: ``label_row[label]`` is the distinct row (of the
    caller's ``DistinctRows``) of each label, -1 for a key the caller does not search."""
    index: VectorIndex
    label_row: np.ndarray
    probes: int

    def rows(self, queries: np.ndarray, n: int) -> np.ndarray:
        """(n_queries, n) distinct rows of each query's candidates (-1 where fewer); queries unit rows."""
        labels = self.index.candidates(queries, n, self.probes)
        if not self.label_row.size:
            return np.full(labels.shape, -1, dtype=np.int64)
        return np.where(labels >= 0, self.label_row[np.maximum(labels, 0)], -1)


def rescore(queries: np.ndarray, vectors: "np.ndarray | RowSubset", cand: np.ndarray, *, unit: bool,
            budget: int = 64 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (distinct rows, -1 for none) scored exactly, each query's list ordered by score descending,
    then row ascending, repeats dropped: ``(rows, scores)`` (-1 and -inf at the end). ``unit``: score by
    cosine (vectors scaled to unit length), else by dot product. Gathers ``budget`` bytes of vectors at a time."""
    nq, c = cand.shape
    cand = np.sort(cand, axis=1)                      # repeats (two keys of one vector) side by side: keep one
    cand[:, 1:][cand[:, 1:] == cand[:, :-1]] = -1
    out_s = np.full((nq, c), -np.inf, dtype=np.float32)
    if c == 0 or nq == 0:
        return cand, out_s
    dim = vectors.shape[1]
    step = max(1, budget // max(1, c * dim * 4))
    for q0 in range(0, nq, step):
        block = cand[q0:q0 + step]
        uniq, inverse = np.unique(np.maximum(block.ravel(), 0), return_inverse=True)
        vecs = np.asarray(vectors[uniq], dtype=np.float32)
        if unit:
            vecs = _unit(vecs, own=True)
        sc = np.einsum("qd,qcd->qc", queries[q0:q0 + step], vecs[inverse.ravel()].reshape(block.shape[0], c, dim))
        out_s[q0:q0 + step] = np.where(block >= 0, sc, -np.inf)
    rows = np.where(np.isfinite(out_s), cand, np.iinfo(np.int64).max)
    order = np.lexsort((rows, -out_s), axis=1)
    rows, out_s = np.take_along_axis(rows, order, axis=1), np.take_along_axis(out_s, order, axis=1)
    rows[~np.isfinite(out_s)] = -1
    return rows, out_s
