"""The workspace store: what a workspace keeps, in SQLite (WAL) rows and float32 vectors.

Every output row is keyed by item id plus the hash of the configuration that made
it, and every write is an idempotent upsert, so re-running a batch overwrites
rather than duplicates, and any two captioners' outputs line up by image id.
Connections, the write protocol (one ``transaction()`` per batch) and the
translation of SQLite failures are ``Database``'s (``pipeline.store.database``).

Vectors are written to SQLite; every write gives the space a new random
*generation*. ``pipeline.snapshots`` reads a whole space through its checked ``.npy``
snapshot, rebuilding it from ``vector_stream`` when it is stale or damaged
(the snapshots call the store, never the other way).

The package: ``database``, ``schema`` (the tables, as migrations), ``sql`` (shared
helpers), and the repositories of two table families, ``runs`` (``Store.runs``) and
``caption_metrics`` (``Store.caption_metrics``); the rows every method returns are in
``pipeline.store_rows``.
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import fields, replace
from functools import cached_property
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

from pipeline.errors import StoreError
from pipeline.estimates import Estimate
from pipeline.run_owner import current_owner, owner_state
from pipeline.states import Status
from pipeline.store.caption_metrics import CaptionMetricTables
from pipeline.store.database import Database
from pipeline.store.runs import RunRecords
from pipeline.store.sql import and_equal, and_in, difference_columns, estimate_columns, in_list, stored_difference
from pipeline.store_rows import (CaptionRow, EvaluationRow, FileRecord, ImageRow, NeighbourRow, Problem, PromptRow,
                                 QueryRow, RankingRow, StageRunRow)

_PROMPT_COLUMNS = "image_id, config_hash, prompt_id, text, n_captions, trimmed, warning"
_QUERY_COLUMNS = ", ".join(f.name for f in fields(QueryRow))
_EVALUATION_COLUMNS = ("eval_hash, method, query_kind, metric, value, ci_low, ci_high, n, baseline, diff, diff_ci_low, "
                       "diff_ci_high, p_value, created_at")
_STAGE_RUN_COLUMNS = ", ".join("target AS variant" if f.name == "variant" else f.name for f in fields(StageRunRow))


def _prompt_row(r: Sequence[Any]) -> PromptRow:
    return PromptRow(r[0], r[1], r[2], r[3], int(r[4]), bool(r[5]), r[6])


class Store(Database):
    """One workspace database and what it keeps. Cheap to construct; connections are opened per thread on first
    use (``Database``)."""

    def __init__(self, root: str | Path, *, create: bool = True):
        super().__init__(root, create=create)
        self.arrays_dir = self.root / "arrays"
        # One line per snapshot rebuilt because it was damaged; printed to stderr unless a caller
        # (the TUI, a test) sets its own ``on_notice``.
        self.notices: list[str] = []
        self.on_notice: Callable[[str], None] | None = None

    @cached_property
    def runs(self) -> RunRecords:
        """The runs of the workspace, their live progress and messages (``pipeline.runs`` reads them)."""
        return RunRecords(self)

    @cached_property
    def caption_metrics(self) -> CaptionMetricTables:
        """The caption-metric rows and summaries (``pipeline.caption_metrics.storage`` reads them)."""
        return CaptionMetricTables(self)

    def notice(self, text: str) -> None:
        self.notices.append(text)
        if self.on_notice is not None:
            self.on_notice(text)
        else:
            print(f"capsearch: {text}", file=sys.stderr, flush=True)

    # -- meta --------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    def delete_meta(self, key: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM meta WHERE key=?", (key,))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- images --------------------------------------------------------------------------
    def upsert_images(self, rows: Iterable[ImageRow | dict[str, Any]], file_stats: dict[str, tuple[int, float]] | None = None,
                      captions_hashes: dict[str, str] | None = None) -> int:
        now = time.time()
        stats = file_stats or {}
        hashes = captions_hashes or {}
        data = []
        for r in rows:
            d = r if isinstance(r, dict) else r.__dict__
            size, mtime = stats.get(d["id"], (None, None))
            data.append((d["id"], d["path"], d["sha256"], d["width"], d["height"], d.get("split"),
                         d.get("official_split"), size, mtime, d.get("note"), now, hashes.get(d["id"])))
        with self.transaction() as c:
            c.executemany(
                """INSERT INTO images(id, path, sha256, width, height, split, official_split, file_size, file_mtime, note,
                                      added_at, captions_hash)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(id) DO UPDATE SET path=excluded.path, sha256=excluded.sha256, width=excluded.width,
                     height=excluded.height, split=COALESCE(excluded.split, images.split),
                     official_split=excluded.official_split, file_size=excluded.file_size,
                     file_mtime=excluded.file_mtime, note=excluded.note, captions_hash=excluded.captions_hash""",
                data,
            )
        return len(data)

    def file_records(self, ids: Sequence[str] | None = None) -> dict[str, FileRecord]:
        """id -> what the last ingest recorded (to skip unchanged files and to see what was committed); with
        ``ids``, those photos' records only."""
        sql, args = "SELECT id, file_size, file_mtime, sha256, captions_hash FROM images", []
        if ids is not None:
            where, arg = in_list("id", ids)
            sql, args = f"{sql} WHERE {where}", [arg]
        return {r[0]: FileRecord(r[1], r[2], r[3], r[4]) for r in self.conn.execute(sql, args)}

    def set_splits(self, splits: dict[str, str | None]) -> None:
        with self.transaction() as c:
            c.executemany("UPDATE images SET split=? WHERE id=?", [(s, i) for i, s in splits.items()])

    def delete_images(self, ids: Sequence[str]) -> None:
        with self.transaction() as c:
            c.executemany("DELETE FROM images WHERE id=?", [(i,) for i in ids])
            c.executemany("DELETE FROM reference_captions WHERE image_id=?", [(i,) for i in ids])

    def images(self, split: str | None = None, ids: Sequence[str] | None = None) -> list[ImageRow]:
        """Stored photos (of ``split``; only those of ``ids``, looked up by id in SQL), sorted by id."""
        sql, args = and_equal("SELECT id, path, sha256, width, height, split, official_split, note FROM images "
                               "WHERE 1=1", [], split=split)
        sql, args = and_in(sql, args, "id", ids)
        return [ImageRow(*r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def identical_copies(self) -> int:
        """Photos whose content (sha256) another stored photo has too, beyond the first copy of each."""
        return int(self.conn.execute(
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM images GROUP BY sha256 HAVING n > 1)"
        ).fetchone()[0])

    def image(self, image_id: str) -> ImageRow | None:
        r = self.conn.execute(
            "SELECT id, path, sha256, width, height, split, official_split, note FROM images WHERE id=?", (image_id,)
        ).fetchone()
        return ImageRow(*r) if r else None

    def image_ids(self, split: str | None = None) -> list[str]:
        if split is None:
            return [r[0] for r in self.conn.execute("SELECT id FROM images ORDER BY id")]
        return [r[0] for r in self.conn.execute("SELECT id FROM images WHERE split=? ORDER BY id", (split,))]

    def count_images(self, split: str | None = None) -> int:
        if split is None:
            return self.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM images WHERE split=?", (split,)).fetchone()[0]

    def has_captions(self, split: str | None = None) -> bool:
        """Whether any photo (of ``split``) has a human (reference) caption."""
        sql = "SELECT 1 FROM reference_captions rc JOIN images i ON i.id = rc.image_id"
        args: list[Any] = []
        if split is not None:
            sql += " WHERE i.split=?"
            args.append(split)
        return self.conn.execute(sql + " LIMIT 1", args).fetchone() is not None

    # -- item inputs ---------------------------------------------------------------------------
    def put_item_inputs(self, stage: str, config_hash: str, fingerprints: dict[str, str]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO item_inputs(stage, config_hash, item, fingerprint) VALUES (?,?,?,?) "
                "ON CONFLICT(stage, config_hash, item) DO UPDATE SET fingerprint=excluded.fingerprint",
                [(stage, config_hash, i, fp) for i, fp in fingerprints.items()])

    def item_inputs(self, stage: str, config_hash: str) -> dict[str, str]:
        return dict(self.conn.execute("SELECT item, fingerprint FROM item_inputs WHERE stage=? AND config_hash=?",
                                      (stage, config_hash)).fetchall())

    # -- reference captions ------------------------------------------------------------------
    def replace_reference_captions(self, captions: dict[str, list[str]]) -> None:
        with self.transaction() as c:
            c.executemany("DELETE FROM reference_captions WHERE image_id=?", [(i,) for i in captions])
            c.executemany(
                "INSERT INTO reference_captions(image_id, idx, text) VALUES (?,?,?)",
                [(i, n, t) for i, texts in captions.items() for n, t in enumerate(texts)],
            )

    def reference_caption_counts(self) -> dict[str, int]:
        """image id -> how many reference captions are stored for it."""
        return dict(self.conn.execute("SELECT image_id, COUNT(*) FROM reference_captions GROUP BY image_id").fetchall())

    def reference_captions(self, ids: Sequence[str] | None = None, split: str | None = None) -> dict[str, list[str]]:
        every = self._kept(("reference_captions",), lambda: self._read_reference_captions(None, None))
        if every is not None:
            wanted = None if ids is None else set(ids)
            if split is not None:
                in_split = set(self.image_ids(split))
                wanted = in_split if wanted is None else wanted & in_split
            return {i: list(texts) for i, texts in every.items() if wanted is None or i in wanted}
        return self._read_reference_captions(ids, split)

    def _read_reference_captions(self, ids: Sequence[str] | None, split: str | None) -> dict[str, list[str]]:
        sql = "SELECT rc.image_id, rc.text FROM reference_captions rc"
        if split is not None:
            sql += " JOIN images i ON i.id = rc.image_id"
        sql, args = and_equal(sql + " WHERE 1=1", [], **{"i.split": split})
        sql, args = and_in(sql, args, "rc.image_id", ids)
        out: dict[str, list[str]] = {}
        for image_id, text in self.conn.execute(sql + " ORDER BY rc.image_id, rc.idx", args):
            out.setdefault(image_id, []).append(text)
        return out

    def reference_db_captions(self, ids: Sequence[str] | None = None) -> dict[str, list[str]]:
        """Captions that may be shown to a captioner: those of reference-DB photos only, never of targets."""
        return self.reference_captions(ids, split="reference")

    # -- problems ---------------------------------------------------------------------------------
    def record_problems(self, stage: str, problems: Iterable[tuple[str, str, str]]) -> None:
        """(item, severity, reason) rows; a later record for the same item replaces the earlier one."""
        now = time.time()
        with self.transaction() as c:
            c.executemany(
                """INSERT INTO problems(stage, item, severity, reason, at) VALUES (?,?,?,?,?)
                   ON CONFLICT(stage, item) DO UPDATE SET severity=excluded.severity, reason=excluded.reason, at=excluded.at""",
                [(stage, item, sev, reason, now) for item, sev, reason in problems],
            )

    def clear_problems(self, stage: str, items: Sequence[str] | None = None) -> None:
        with self.transaction() as c:
            if items is None:
                c.execute("DELETE FROM problems WHERE stage=?", (stage,))
            else:
                c.executemany("DELETE FROM problems WHERE stage=? AND item=?", [(stage, i) for i in items])

    def problems(self, stage: str | None = None) -> list[Problem]:
        """Recorded problems (of ``stage``), by stage and item."""
        sql = "SELECT stage, item, severity, reason FROM problems"
        args: list[Any] = []
        if stage is not None:
            sql += " WHERE stage=?"
            args.append(stage)
        return [Problem(*r) for r in self.conn.execute(sql + " ORDER BY stage, item", args)]

    # -- vectors ------------------------------------------------------------------------------------
    def put_vectors(self, space: str, keys: Sequence[str], vectors: Any) -> None:
        import numpy as np

        arr = np.ascontiguousarray(np.asarray(vectors, dtype="<f4"))
        if arr.ndim != 2 or arr.shape[0] != len(keys):
            raise ValueError(f"vectors for {space}: shape {arr.shape} does not match {len(keys)} keys")
        with self.transaction() as c:
            row = c.execute("SELECT dim FROM spaces WHERE space=?", (space,)).fetchone()
            if row is not None and row[0] != arr.shape[1]:
                raise StoreError(f"vector space {space} holds dimension {row[0]}, got {arr.shape[1]}")
            c.execute(
                "INSERT INTO spaces(space, dim, version, generation) VALUES (?,?,1,?) "
                "ON CONFLICT(space) DO UPDATE SET version=spaces.version+1, generation=excluded.generation",
                (space, arr.shape[1], uuid.uuid4().hex),
            )
            c.executemany(
                "INSERT INTO vectors(space, key, vec) VALUES (?,?,?) ON CONFLICT(space, key) DO UPDATE SET vec=excluded.vec",
                [(space, k, arr[i].tobytes()) for i, k in enumerate(keys)],
            )

    def has_vectors(self, space: str, keys: Sequence[str]) -> set[str]:
        """The subset of keys that already have a vector in this space."""
        clause, arg = in_list("key", keys)
        return {r[0] for r in self.conn.execute(f"SELECT key FROM vectors WHERE space=? AND {clause}", (space, arg))}

    def get_vectors(self, space: str, keys: Sequence[str] | None = None) -> tuple[list[str], Any]:
        """(keys, float32 matrix). With keys given, returns them in that order (missing ones are left out)."""
        with self.read():
            return self._get_vectors(space, keys)

    def _get_vectors(self, space: str, keys: Sequence[str] | None) -> tuple[list[str], Any]:
        import numpy as np

        row = self.conn.execute("SELECT dim FROM spaces WHERE space=?", (space,)).fetchone()
        if row is None:
            return [], np.zeros((0, 0), dtype=np.float32)
        dim = row[0]
        if keys is None:
            rows = self.conn.execute("SELECT key, vec FROM vectors WHERE space=? ORDER BY key", (space,)).fetchall()
        else:
            keys = list(keys)
            clause, arg = in_list("key", keys)
            found: dict[str, bytes] = dict(self.conn.execute(f"SELECT key, vec FROM vectors WHERE space=? AND {clause}",
                                                             (space, arg)).fetchall())
            rows = [(k, found[k]) for k in dict.fromkeys(keys) if k in found]
        if not rows:
            return [], np.zeros((0, dim), dtype=np.float32)
        mat = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
        return [r[0] for r in rows], mat.astype(np.float32, copy=True)

    def space_state(self, space: str) -> tuple[str, int]:
        """(generation, dim) of a space ('' and 0 when it does not exist). Cheap: no scan of the vectors."""
        row = self.conn.execute("SELECT dim, COALESCE(generation, 'v' || version) FROM spaces WHERE space=?",
                                (space,)).fetchone()
        return ("", 0) if row is None else (row[1], row[0])

    @contextmanager
    def vector_stream(self, space: str, chunk: int = 4096) -> Iterator[tuple[str, int, int, Iterator[tuple[list[str], bytes]]]]:
        """``(generation, rows, dim, chunks)`` of a whole space from one consistent read, the vectors in key
        order as ``(keys, float32 bytes)`` of ``chunk`` rows at a time: what a snapshot is written from, without
        holding the space in memory."""
        with self.read() as c:
            row = c.execute("SELECT dim, COALESCE(generation, 'v' || version) FROM spaces WHERE space=?",
                            (space,)).fetchone()
            if row is None:
                yield "none", 0, 0, iter(())
                return
            dim, generation = row
            n = c.execute("SELECT COUNT(*) FROM vectors WHERE space=?", (space,)).fetchone()[0]

            def chunks() -> Iterator[tuple[list[str], bytes]]:
                cur = c.execute("SELECT key, vec FROM vectors WHERE space=? ORDER BY key", (space,))
                while rows := cur.fetchmany(chunk):
                    yield [r[0] for r in rows], b"".join(r[1] for r in rows)
            yield generation, n, dim, chunks()

    def has_space(self, space: str) -> bool:
        """Whether vectors were ever stored in ``space`` (what ``space in vector_spaces()`` says, without counting
        every vector of every space: that reads each vector's blob, 0.6 s at 100k photos on 2 cores)."""
        with self.read():
            return self.conn.execute("SELECT 1 FROM spaces WHERE space=?", (space,)).fetchone() is not None

    def vector_spaces(self) -> dict[str, tuple[int, int]]:
        """space -> (dim, count); counting reads every vector, so ``has_space`` is the way to ask for one space."""
        out = {}
        with self.read():
            for space, dim in self.conn.execute("SELECT space, dim FROM spaces ORDER BY space").fetchall():
                n = self.conn.execute("SELECT COUNT(*) FROM vectors WHERE space=?", (space,)).fetchone()[0]
                out[space] = (dim, n)
        return out

    # -- neighbours ------------------------------------------------------------------------------------
    def put_neighbours(self, config_hash: str, rows: Iterable[tuple[str, int, str, float, int]]) -> None:
        """(target_id, rank, neighbour_id, score, duplicate) rows, rank from 1; duplicate is 0 (none), 1 (a near
        duplicate of the target) or 2 (the same photo: same sha256)."""
        data = [(config_hash, t, r, n, float(s), int(d)) for t, r, n, s, d in rows]
        targets = sorted({d[1] for d in data})
        with self.transaction() as c:
            c.executemany("DELETE FROM neighbours WHERE config_hash=? AND target_id=?", [(config_hash, t) for t in targets])
            c.executemany(
                "INSERT INTO neighbours(config_hash, target_id, rank, neighbour_id, score, near_duplicate) VALUES (?,?,?,?,?,?)",
                data,
            )

    def delete_neighbours(self, config_hash: str, target_ids: Sequence[str]) -> None:
        with self.transaction() as c:
            c.executemany("DELETE FROM neighbours WHERE config_hash=? AND target_id=?",
                          [(config_hash, t) for t in target_ids])

    def neighbours(self, config_hash: str, target_ids: Sequence[str] | None = None) -> dict[str, list[NeighbourRow]]:
        """target -> its neighbours, nearest first (duplicate kind 0: none, 1: near, 2: exact)."""
        out: dict[str, list[NeighbourRow]] = {}
        sql, args = "SELECT target_id, neighbour_id, score, near_duplicate FROM neighbours WHERE config_hash=?", [config_hash]
        if target_ids is not None:
            clause, arg = in_list("target_id", target_ids)
            sql, args = f"{sql} AND {clause}", [config_hash, arg]
        for t, n, s, d in self.conn.execute(sql + " ORDER BY target_id, rank", args):
            out.setdefault(t, []).append(NeighbourRow(n, s, int(d)))
        return out

    def latest_neighbours_hash(self, target_id: str) -> str | None:
        """The configuration hash of the newest neighbour list stored for a photo (None: none)."""
        r = self.conn.execute("SELECT config_hash FROM neighbours WHERE target_id=? ORDER BY rowid DESC LIMIT 1",
                              (target_id,)).fetchone()
        return r[0] if r else None

    def targets_with_duplicate_neighbours(self, config_hash: str) -> dict[int, int]:
        """Duplicate kind (1: near, 2: exact) -> how many stored photos list such a duplicate among their
        neighbours under ``config_hash``."""
        return {int(kind): int(n) for kind, n in self.conn.execute(
            "SELECT n.near_duplicate, COUNT(DISTINCT n.target_id) FROM neighbours n JOIN images i ON i.id = n.target_id "
            "WHERE n.config_hash=? AND n.near_duplicate > 0 GROUP BY n.near_duplicate", (config_hash,))}

    def neighbour_targets(self, config_hash: str) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT target_id FROM neighbours WHERE config_hash=?", (config_hash,))}

    # -- prompts ---------------------------------------------------------------------------------------
    def put_prompts(self, config_hash: str, rows: Iterable[tuple[str, str, str, int, bool, str | None]]) -> None:
        """(image_id, prompt_id, text, n_captions, trimmed, warning) rows."""
        with self.transaction() as c:
            c.executemany(
                """INSERT INTO prompts(config_hash, image_id, prompt_id, text, n_captions, trimmed, warning) VALUES (?,?,?,?,?,?,?)
                   ON CONFLICT(config_hash, image_id) DO UPDATE SET prompt_id=excluded.prompt_id, text=excluded.text,
                     n_captions=excluded.n_captions, trimmed=excluded.trimmed, warning=excluded.warning""",
                [(config_hash, i, p, t, n, int(tr), w) for i, p, t, n, tr, w in rows],
            )

    def prompts(self, config_hash: str, ids: Sequence[str] | None = None) -> dict[str, PromptRow]:
        """image_id -> its prompt under ``config_hash``."""
        wanted = set(ids) if ids is not None else None
        return {
            r[0]: _prompt_row(r)
            for r in self.conn.execute(f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE config_hash=?", (config_hash,))
            if wanted is None or r[0] in wanted
        }

    def prompt_for(self, image_id: str, config_hash: str | None = None) -> PromptRow | None:
        """The stored prompt of one photo (latest written when no hash is given)."""
        sql, args = and_equal(f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE image_id=?", [image_id],
                               config_hash=config_hash)
        r = self.conn.execute(sql + " ORDER BY rowid DESC LIMIT 1", args).fetchone()
        return _prompt_row(r) if r else None

    # -- captions --------------------------------------------------------------------------------------
    def put_captions(self, captioner: str, config_hash: str, rows: Iterable[dict[str, Any]]) -> None:
        """Rows with image_id, text, status, error, model, prompt_id, settings, seconds, attempts (and for an endpoint
        captioner prompt_tokens, completion_tokens)."""
        now = time.time()
        data = [
            (captioner, config_hash, r["image_id"], r.get("text") or "", r["status"], r.get("error"), r.get("model"),
             r.get("prompt_id"), json.dumps(r.get("settings") or {}, sort_keys=True), r.get("seconds"),
             r.get("attempts", 1), r.get("prompt_tokens", 0), r.get("completion_tokens", 0), now)
            for r in rows
        ]
        with self.transaction() as c:
            c.executemany(
                """INSERT INTO captions(captioner, config_hash, image_id, text, status, error, model, prompt_id, settings, seconds, attempts,
                                        prompt_tokens, completion_tokens, created_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(captioner, config_hash, image_id) DO UPDATE SET text=excluded.text, status=excluded.status,
                     error=excluded.error, model=excluded.model, prompt_id=excluded.prompt_id, settings=excluded.settings,
                     seconds=excluded.seconds, attempts=excluded.attempts, prompt_tokens=excluded.prompt_tokens,
                     completion_tokens=excluded.completion_tokens, created_at=excluded.created_at""",
                data,
            )

    def captions(self, captioner: str, config_hash: str, ids: Sequence[str] | None = None, status: str | None = None) -> dict[str, CaptionRow]:
        every = self._kept(("captions", captioner, config_hash), lambda: self._read_captions(captioner, config_hash))
        if every is not None:
            wanted = None if ids is None else set(ids)
            return {i: r for i, r in every.items()
                    if (wanted is None or i in wanted) and (status is None or r.status == status)}
        return self._read_captions(captioner, config_hash, ids, status)

    def _read_captions(self, captioner: str, config_hash: str, ids: Sequence[str] | None = None,
                       status: str | None = None) -> dict[str, CaptionRow]:
        sql, args = and_equal("SELECT image_id, captioner, config_hash, text, status, error, model, prompt_id, settings, "
                              "seconds, attempts, prompt_tokens, completion_tokens FROM captions "
                              "WHERE captioner=? AND config_hash=?", [captioner, config_hash], status=status)
        sql, args = and_in(sql, args, "image_id", ids)
        out = {}
        for r in self.conn.execute(sql, args):
            out[r[0]] = CaptionRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8] or "{}"), r[9], r[10],
                                   r[11], r[12])
        return out

    def target_caption_texts(self) -> dict[str, list[str]]:
        """Target photo -> its reference captions (in order), then every ok caption a captioner wrote for it:
        what the photo list shows and filters by."""
        texts: dict[str, list[str]] = {}
        with self.read() as c:
            for image_id, text in c.execute(
                "SELECT rc.image_id, rc.text FROM reference_captions rc JOIN images i ON i.id = rc.image_id "
                "WHERE i.split='target' ORDER BY rc.image_id, rc.idx"
            ):
                texts.setdefault(image_id, []).append(text)
            for image_id, text in c.execute(
                "SELECT c.image_id, c.text FROM captions c JOIN images i ON i.id = c.image_id "
                "WHERE i.split='target' AND c.status='ok'"
            ):
                texts.setdefault(image_id, []).append(text)
        return texts

    def captions_for_image(self, image_id: str) -> list[CaptionRow]:
        """Every caption of one photo, newest first per captioner (for browsing)."""
        rows = self.conn.execute(
            "SELECT image_id, captioner, config_hash, text, status, error, model, prompt_id, settings, seconds, attempts "
            "FROM captions WHERE image_id=? ORDER BY captioner, created_at DESC",
            (image_id,),
        ).fetchall()
        return [CaptionRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8] or "{}"), r[9], r[10]) for r in rows]

    def delete_captions(self, captioner: str | None = None) -> None:
        with self.transaction() as c:
            if captioner is None:
                c.execute("DELETE FROM captions")
            else:
                c.execute("DELETE FROM captions WHERE captioner=?", (captioner,))

    # -- queries ----------------------------------------------------------------------------------------
    def put_queries(self, config_hash: str, rows: Iterable[dict[str, Any]]) -> None:
        now = time.time()
        data = [
            (config_hash, r["image_id"], r["kind"], r["generator"], r.get("text") or "", r["status"], r.get("error"),
             r.get("source_caption_idx"), r.get("prompt_tokens", 0), r.get("completion_tokens", 0), now)
            for r in rows
        ]
        with self.transaction() as c:
            c.executemany(
                """INSERT INTO queries(config_hash, image_id, kind, generator, text, status, error, source_caption_idx, prompt_tokens, completion_tokens, created_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(config_hash, image_id, kind) DO UPDATE SET generator=excluded.generator, text=excluded.text,
                     status=excluded.status, error=excluded.error, source_caption_idx=excluded.source_caption_idx,
                     prompt_tokens=excluded.prompt_tokens, completion_tokens=excluded.completion_tokens, created_at=excluded.created_at""",
                data,
            )

    def queries(self, config_hash: str, kind: str | None = None, status: str | None = None) -> list[QueryRow]:
        """The queries of one queries configuration (of ``kind``, with ``status``), by photo and kind."""
        sql, args = and_equal(f"SELECT {_QUERY_COLUMNS} FROM queries WHERE config_hash=?", [config_hash],
                               kind=kind, status=status)
        return [QueryRow(*r) for r in self.conn.execute(sql + " ORDER BY image_id, kind", args)]

    def latest_queries_hash(self) -> str | None:
        """The configuration hash of the newest ok query (None: no query stored)."""
        r = self.conn.execute("SELECT config_hash FROM queries WHERE status='ok' ORDER BY created_at DESC LIMIT 1").fetchone()
        return r[0] if r else None

    # -- rankings and evaluations ---------------------------------------------------------------------------
    def put_rankings(self, eval_hash: str, rows: Iterable[tuple[str, str, str, float, list[str], list[float]]]) -> None:
        """(method, query_kind, image_id, rank, top_ids, top_scores) rows."""
        with self.transaction() as c:
            c.executemany(
                """INSERT INTO rankings(eval_hash, method, query_kind, image_id, rank, top_ids, top_scores) VALUES (?,?,?,?,?,?,?)
                   ON CONFLICT(eval_hash, method, query_kind, image_id) DO UPDATE SET rank=excluded.rank,
                     top_ids=excluded.top_ids, top_scores=excluded.top_scores""",
                [(eval_hash, m, k, i, float(r), json.dumps(t), json.dumps([round(float(s), 6) for s in sc]))
                 for m, k, i, r, t, sc in rows],
            )

    def rankings(self, eval_hash: str, method: str | None = None, query_kind: str | None = None) -> list[RankingRow]:
        sql, args = and_equal("SELECT method, query_kind, image_id, rank, top_ids, top_scores FROM rankings "
                               "WHERE eval_hash=?", [eval_hash], method=method, query_kind=query_kind)
        return [RankingRow(m, k, i, r, tuple(json.loads(t)), tuple(json.loads(sc)))
                for m, k, i, r, t, sc in self.conn.execute(sql + " ORDER BY method, query_kind, image_id", args)]

    def put_evaluations(self, eval_hash: str, rows: Iterable[EvaluationRow]) -> None:
        """Replace the metrics of one evaluation (its rows' ``eval_hash`` and ``created_at`` are this call's)."""
        now = time.time()
        with self.transaction() as c:
            c.execute("DELETE FROM evaluations WHERE eval_hash=?", (eval_hash,))
            c.executemany(
                f"INSERT INTO evaluations({_EVALUATION_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                [(eval_hash, r.method, r.query_kind, r.metric, *estimate_columns(r.estimate), r.n,
                  r.baseline if r.vs_baseline else None, *difference_columns(r.vs_baseline), now) for r in rows],
            )

    def evaluations(self, eval_hash: str | None = None) -> list[EvaluationRow]:
        """The metrics of one evaluation (the newest when no hash is given), by method, query kind and metric."""
        if eval_hash is None:
            eval_hash = self.latest_eval_hash()
            if eval_hash is None:
                return []
        return [EvaluationRow(r[0], r[1], r[2], r[3], Estimate(*r[4:7]), r[7], r[8], stored_difference(r[8], r[9:13]),
                              r[13]) for r in self.conn.execute(
            f"SELECT {_EVALUATION_COLUMNS} FROM evaluations WHERE eval_hash=? ORDER BY method, query_kind, metric",
            (eval_hash,))]

    def latest_eval_hash(self) -> str | None:
        r = self.conn.execute("SELECT eval_hash FROM evaluations ORDER BY created_at DESC LIMIT 1").fetchone()
        return r[0] if r else None

    # -- stage runs ------------------------------------------------------------------------------------------
    def start_stage_run(self, stage: str, config_hash: str, config: dict[str, Any] | None = None, target: str = "",
                        flow_run_id: str | None = None, run_id: int | None = None) -> int:
        """Record a stage run of this process (first marking runs left ``running`` by dead processes as crashed).

        ``run_id`` is the workspace run (``pipeline.runs``) it belongs to, when there is one."""
        with self.transaction() as c:
            self.mark_crashed_runs()
            cur = c.execute(
                "INSERT INTO stage_runs(stage, target, config_hash, status, started_at, flow_run_id, config, owner, run_id) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (stage, target, config_hash, Status.RUNNING, time.time(), flow_run_id, json.dumps(config or {}, sort_keys=True),
                 current_owner(), run_id),
            )
            return int(cur.lastrowid)

    def finish_stage_run(self, run_id: int, status: Status, done: int = 0, failed: int = 0, skipped: int = 0,
                         message: str | None = None, usage: dict[str, Any] | None = None) -> None:
        """``usage``: what the run's requests to a model server cost (``TokenUsage.as_dict``), for a stage that made any."""
        with self.transaction() as c:
            c.execute(
                "UPDATE stage_runs SET status=?, finished_at=?, done=?, failed=?, skipped=?, message=?, usage=? WHERE id=?",
                (status, time.time(), done, failed, skipped, message,
                 None if usage is None else json.dumps(usage, sort_keys=True), run_id),
            )

    def mark_crashed_runs(self) -> int:
        """Mark ``running`` stage runs whose process has ended (killed, crashed, power cut) as ``crashed``."""
        with self.transaction() as c:
            dead = [r[0] for r in c.execute("SELECT id, owner FROM stage_runs WHERE status=?", (Status.RUNNING,))
                    if owner_state(r[1]) == "dead"]
            c.executemany(
                "UPDATE stage_runs SET status=?, finished_at=?, "
                "message=COALESCE(message, 'its process ended without finishing it') WHERE id=? AND status=?",
                [(Status.CRASHED, time.time(), i, Status.RUNNING) for i in dead])
            return len(dead)

    def stage_runs(self, stage: str | None = None, limit: int = 50) -> list[StageRunRow]:
        """The newest stage runs (of ``stage``) first; a run whose process ended while it ran reads ``crashed``
        at once (the next run that starts records it so)."""
        sql, args = and_equal(f"SELECT {_STAGE_RUN_COLUMNS} FROM stage_runs WHERE 1=1", [], stage=stage)
        rows = [StageRunRow(*r) for r in self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])]
        return [replace(r, status=Status.CRASHED) if r.status is Status.RUNNING and owner_state(r.owner) == "dead"
                else r for r in rows]
