"""The workspace store: SQLite (WAL) for rows, float32 vectors, and ``.npy`` snapshots for fast reads.

Every output row is keyed by item id plus the hash of the configuration that made
it, and every write is an idempotent upsert, so re-running a batch overwrites
rather than duplicates, and any two captioners' outputs line up by image id.

Write protocol (docs/architecture.md, "The store's write protocol"): ``transaction()``
is one SQLite transaction; called inside another it joins it (a savepoint), so a
stage wraps everything one batch writes in one ``transaction()`` and it commits
together or not at all. A full disk raises ``DiskFullError``; any other SQLite
failure ``StoreError``: never an error of the item being computed.

Vectors are written to SQLite; every write gives the space a new random
*generation*. ``load_array`` reads a space through its checked ``.npy`` snapshot
(``pipeline.snapshots``), rebuilding it when it is stale or damaged.

Each thread gets its own connection (sqlite3 connections are not shared between
threads); WAL mode lets a reader read while a writer writes.
"""
from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from pipeline.errors import DiskFullError, StoreError
from pipeline.run_owner import current_owner, owner_state
from pipeline.store_rows import (CaptionRow, EvaluationRow, FileRecord, ImageRow, NeighbourRow, Problem,  # noqa: F401
                                 PromptRow, QueryRow, RankingRow, StageRunRow)

SCHEMA_VERSION = 6

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE images (
        id TEXT PRIMARY KEY,             -- relative path inside the collection (posix)
        path TEXT NOT NULL,              -- same as id today; kept separate so ids can be renamed
        sha256 TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        split TEXT,                      -- 'reference' | 'target' | NULL (not assigned yet)
        official_split TEXT,             -- Flickr8k: 'train' | 'dev' | 'test'
        file_size INTEGER,
        file_mtime REAL,
        note TEXT,                       -- e.g. 'converted from CMYK'
        added_at REAL NOT NULL
    );
    CREATE INDEX images_split ON images(split);
    CREATE INDEX images_sha ON images(sha256);

    CREATE TABLE reference_captions (
        image_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (image_id, idx)
    );

    CREATE TABLE problems (
        stage TEXT NOT NULL,
        item TEXT NOT NULL,
        severity TEXT NOT NULL,          -- 'skipped' | 'failed' | 'repaired' | 'warning'
        reason TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (stage, item)
    );

    CREATE TABLE spaces (
        space TEXT PRIMARY KEY,          -- e.g. 'image/classical-v1-…' or 'caption/minilm-…'
        dim INTEGER NOT NULL,
        version INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE vectors (
        space TEXT NOT NULL,
        key TEXT NOT NULL,               -- image sha256, or text hash
        vec BLOB NOT NULL,               -- float32 little-endian
        PRIMARY KEY (space, key)
    ) WITHOUT ROWID;

    CREATE TABLE neighbours (
        config_hash TEXT NOT NULL,
        target_id TEXT NOT NULL,
        rank INTEGER NOT NULL,
        neighbour_id TEXT NOT NULL,
        score REAL NOT NULL,
        near_duplicate INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (config_hash, target_id, rank)
    );

    CREATE TABLE prompts (
        config_hash TEXT NOT NULL,
        image_id TEXT NOT NULL,
        prompt_id TEXT NOT NULL,         -- hash of the text
        text TEXT NOT NULL,
        n_captions INTEGER NOT NULL,
        trimmed INTEGER NOT NULL DEFAULT 0,
        warning TEXT,
        PRIMARY KEY (config_hash, image_id)
    );

    CREATE TABLE captions (
        captioner TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        image_id TEXT NOT NULL,
        text TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,            -- 'ok' | 'empty' | 'failed'
        error TEXT,
        model TEXT,
        prompt_id TEXT,
        settings TEXT,                   -- JSON generation settings
        seconds REAL,
        attempts INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        PRIMARY KEY (captioner, config_hash, image_id)
    );

    CREATE TABLE queries (
        config_hash TEXT NOT NULL,
        image_id TEXT NOT NULL,
        kind TEXT NOT NULL,              -- 'short' | 'detail'
        generator TEXT NOT NULL,
        text TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,            -- 'ok' | 'failed'
        error TEXT,
        source_caption_idx INTEGER,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        PRIMARY KEY (config_hash, image_id, kind)
    );

    CREATE TABLE rankings (
        eval_hash TEXT NOT NULL,
        method TEXT NOT NULL,
        query_kind TEXT NOT NULL,
        image_id TEXT NOT NULL,          -- the true photo of the query
        rank REAL NOT NULL,              -- expected rank under random tie-breaking (1 = top)
        top_ids TEXT NOT NULL,           -- JSON list
        top_scores TEXT NOT NULL,        -- JSON list
        PRIMARY KEY (eval_hash, method, query_kind, image_id)
    );

    CREATE TABLE evaluations (
        eval_hash TEXT NOT NULL,
        method TEXT NOT NULL,
        query_kind TEXT NOT NULL,
        metric TEXT NOT NULL,            -- 'R@1' | 'R@5' | 'R@10' | 'MRR' | 'MedR'
        value REAL NOT NULL,
        ci_low REAL,
        ci_high REAL,
        n INTEGER NOT NULL,
        baseline TEXT,
        diff REAL,
        diff_ci_low REAL,
        diff_ci_high REAL,
        p_value REAL,
        created_at REAL NOT NULL,
        PRIMARY KEY (eval_hash, method, query_kind, metric)
    );

    CREATE TABLE stage_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        stage TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '', -- e.g. the captioner
        config_hash TEXT NOT NULL,
        status TEXT NOT NULL,            -- 'running' | 'completed' | 'failed' | 'cancelled'
        started_at REAL NOT NULL,
        finished_at REAL,
        done INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        message TEXT,
        flow_run_id TEXT,
        config TEXT                      -- JSON of the stage configuration
    );
    CREATE INDEX stage_runs_stage ON stage_runs(stage, started_at);
    """,
    2: """
    -- hash of the reference captions committed with the photo: ingest counts a photo done only with them
    ALTER TABLE images ADD COLUMN captions_hash TEXT;
    -- random id of a space's vectors, new at every write: names the snapshot that matches them
    ALTER TABLE spaces ADD COLUMN generation TEXT;
    -- the process that runs a stage run (JSON: host, pid, start): a dead owner's run is marked crashed
    ALTER TABLE stage_runs ADD COLUMN owner TEXT;
    UPDATE stage_runs SET status='crashed', finished_at=COALESCE(finished_at, started_at),
        message=COALESCE(message, 'left running by an earlier capsearch (its process was not recorded)')
        WHERE status='running';
    """,
    3: """
    -- caption metrics (pipeline/caption_metrics) in tables; schema 2 kept them as JSON blobs in meta.
    -- A *row* is one captioner (or 'human') scored photo by photo, keyed by its row hash (what it read,
    -- how it was tokenised, which metrics could run); every configuration with that hash reuses it.
    CREATE TABLE caption_metric_rows (
        row_hash TEXT PRIMARY KEY,
        row TEXT NOT NULL,               -- the captioner, or 'human'
        vocabulary INTEGER NOT NULL,     -- distinct words over the row's captions
        distinct_share REAL,             -- distinct captions per caption (NULL: the row has no caption)
        shown TEXT NOT NULL DEFAULT '',  -- what the captioner was shown in its prompt (copy rate)
        seconds REAL,
        created_at REAL NOT NULL
    );
    CREATE TABLE caption_metric_photos (
        row_hash TEXT NOT NULL,
        idx INTEGER NOT NULL,            -- the photo's place in the row
        image_id TEXT NOT NULL,
        caption TEXT NOT NULL,           -- the caption scored; '' where the photo had none (scored 0)
        bleu_stats TEXT,                 -- JSON list: BLEU's counts (corpus BLEU and its bootstrap); NULL: no BLEU
        meteor_stats TEXT,               -- JSON list: the METEOR jar's statistics; NULL: no METEOR
        PRIMARY KEY (row_hash, idx),
        UNIQUE (row_hash, image_id)
    );
    CREATE TABLE caption_metric_scores (
        row_hash TEXT NOT NULL,
        metric TEXT NOT NULL,            -- a per-photo metric: 'CIDEr-D', 'METEOR', 'CLIPScore', 'copy rate', ...
        image_id TEXT NOT NULL,
        value REAL,                      -- NULL: no value for this photo (no image vector for CLIPScore, say)
        PRIMARY KEY (row_hash, metric, image_id)
    ) WITHOUT ROWID;
    CREATE INDEX caption_metric_scores_image ON caption_metric_scores(image_id);

    -- the summary of one caption-metrics configuration (its stage hash): rows, metrics, values with CIs
    CREATE TABLE caption_metric_summaries (
        config_hash TEXT PRIMARY KEY,
        baseline TEXT,                   -- the row every other is compared with (NULL: no paired test)
        n_photos INTEGER NOT NULL,
        tokenizer TEXT NOT NULL,
        reference_rule TEXT NOT NULL,    -- how each photo's references were chosen, in words
        n_boot INTEGER NOT NULL,
        confidence REAL NOT NULL,
        notes TEXT NOT NULL DEFAULT '[]',  -- JSON list of notes shown with the table
        seconds REAL,
        created_at REAL NOT NULL
    );
    CREATE TABLE caption_metric_summary_rows (
        config_hash TEXT NOT NULL,
        position INTEGER NOT NULL,       -- column order: human first, then the captioners
        row TEXT NOT NULL,
        row_hash TEXT NOT NULL,          -- its per-photo scores
        missing INTEGER NOT NULL,        -- photos without a usable caption (scored 0)
        PRIMARY KEY (config_hash, row)
    );
    CREATE TABLE caption_metric_summary_metrics (
        config_hash TEXT NOT NULL,
        position INTEGER NOT NULL,       -- order among the computed metrics, or among those not computed
        metric TEXT NOT NULL,
        reason TEXT,                     -- NULL: computed; else why not (no Java for METEOR, SPICE offline, ...)
        PRIMARY KEY (config_hash, metric)
    );
    CREATE TABLE caption_metric_values (
        config_hash TEXT NOT NULL,
        row TEXT NOT NULL,
        metric TEXT NOT NULL,
        value REAL,
        ci_low REAL,
        ci_high REAL,
        n INTEGER NOT NULL,              -- photos the value is made from
        baseline TEXT,                   -- the row of the paired test below (NULL: none)
        diff REAL,
        diff_ci_low REAL,
        diff_ci_high REAL,
        p_value REAL,
        PRIMARY KEY (config_hash, row, metric)
    );
    -- the schema 2 blobs are not carried over: caption metrics are derived, and the next run computes them
    -- again into the tables above (the same numbers), so nothing stale is left in meta
    DELETE FROM meta WHERE key LIKE 'caption-metrics/%';
    """,
    4: """
    -- the input fingerprint each item's outputs were computed from (Stage.record_inputs), written with the
    -- outputs: an item whose inputs changed since (a replaced photo, edited captions) is computed again
    CREATE TABLE item_inputs (
        stage TEXT NOT NULL,             -- the stage label, e.g. 'prompts' or 'caption:knn-consensus'
        config_hash TEXT NOT NULL,
        item TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        PRIMARY KEY (stage, config_hash, item)
    ) WITHOUT ROWID;
    """,
    5: """
    -- runs of the workspace, one at a time (pipeline.run_lock), whoever started them (pipeline.runs)
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,             -- the process that runs it (JSON: host, pid, start; pipeline.run_owner)
        status TEXT NOT NULL,            -- 'running' | 'completed' | 'failed' | 'cancelled' | 'crashed'
        what TEXT NOT NULL,              -- the stages asked for, in words
        started_by TEXT NOT NULL,        -- who started it, and how
        started_at REAL NOT NULL,
        finished_at REAL,
        flow_run_id TEXT,                -- its Prefect pipeline flow run
        deployment TEXT,                 -- the Prefect deployment it is a run of (cancelled through Prefect)
        api_url TEXT,                    -- the Prefect API its flow runs report to ('' for a temporary one)
        log_path TEXT,                   -- where a background run writes its output
        message TEXT
    );
    CREATE INDEX runs_status ON runs(status);
    -- the live progress of a run's stages, written by the running process at a bounded rate
    CREATE TABLE run_progress (
        run_id INTEGER NOT NULL,
        stage TEXT NOT NULL,             -- label, e.g. 'caption:knn-consensus'
        position INTEGER NOT NULL,       -- the order the stages started in
        state TEXT NOT NULL,             -- 'running' | 'finished'
        done INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        batches_done INTEGER NOT NULL DEFAULT 0,
        batches INTEGER NOT NULL DEFAULT 0,
        rate REAL,                       -- items per second
        message TEXT,                    -- the last message
        level TEXT,
        started_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (run_id, stage)
    );
    -- the messages of a run (skipped photos, warnings), a bounded number per run
    CREATE TABLE run_log (
        run_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        stage TEXT NOT NULL,
        level TEXT NOT NULL,
        text TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    ALTER TABLE stage_runs ADD COLUMN run_id INTEGER;
    """,
    6: """
    -- captioning through a model server (an endpoint captioner): the tokens each caption cost, the tokens of a
    -- stage run so far (its tokens/s while it runs) and what the whole stage run cost (JSON: TokenUsage)
    ALTER TABLE captions ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE captions ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE run_progress ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE stage_runs ADD COLUMN usage TEXT;
    """,
}


def _statements(script: str) -> Iterator[str]:
    """Split a SQL script into complete statements (comments may contain semicolons)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if buf.strip():
        yield buf


# -- caption metrics (migration 3) ------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionMetricPhoto:
    """One photo of a caption-metrics row: the caption scored and the counts corpus scores are made from."""
    image_id: str
    caption: str                                  # '' where the photo had no usable caption (scored 0)
    bleu_stats: tuple[float, ...] | None          # None: BLEU not computed (no references)
    meteor_stats: tuple[float, ...] | None        # None: METEOR not computed


@dataclass(frozen=True)
class CaptionMetricScore:
    """A photo's score under one per-photo metric (value None: no value for this photo)."""
    image_id: str
    metric: str
    value: float | None


@dataclass(frozen=True)
class StoredCaptionRow:
    """One caption-metrics row as stored: a captioner (or ``human``) scored photo by photo."""
    row_hash: str
    row: str
    vocabulary: int
    distinct: float | None
    shown: str
    seconds: float | None
    photos: tuple[CaptionMetricPhoto, ...]        # in the row's photo order
    scores: tuple[CaptionMetricScore, ...]        # by metric, then photo order


@dataclass(frozen=True)
class CaptionSummaryRow:
    row: str
    row_hash: str
    missing: int


@dataclass(frozen=True)
class CaptionMetricValue:
    """A row's value of one metric with its interval and the paired test against the baseline."""
    row: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int                                        # photos the value is made from
    baseline: str | None = None                   # None: no paired test for this cell
    diff: float | None = None
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class StoredCaptionSummary:
    """The caption-metrics summary of one stage configuration."""
    config_hash: str
    baseline: str | None
    n_photos: int
    tokenizer: str
    reference_rule: str
    n_boot: int
    confidence: float
    notes: tuple[str, ...]
    seconds: float | None
    created_at: float
    rows: tuple[CaptionSummaryRow, ...]           # column order
    metrics: tuple[str, ...]                      # computed, in catalogue order
    not_computed: tuple[tuple[str, str], ...]     # (metric, why not), in the order the reasons were found
    values: tuple[CaptionMetricValue, ...]


def _rollback(conn: sqlite3.Connection, *statements: str) -> None:
    """Undo an open transaction; a failure here (the disk is gone) must not hide the error that caused it."""
    try:
        for statement in statements:
            if conn.in_transaction:
                conn.execute(statement)
    except sqlite3.Error:
        pass


def _json_list(values: Sequence[float] | None) -> str | None:
    """A list of floats as JSON text (exact: Python writes the shortest repr that reads back the same)."""
    return None if values is None else json.dumps([float(v) for v in values])


def _from_json_list(text: str | None) -> tuple[float, ...] | None:
    return None if text is None else tuple(json.loads(text))     # written as floats, read back as floats


def _in_list(column: str, values: Sequence[str]) -> tuple[str, str]:
    """(``column IN (...)`` over one JSON parameter, the parameter): SQLite looks the values up in the column's
    index, so reading a batch's rows costs the batch, not the table (any number of values, one parameter)."""
    return f"{column} IN (SELECT value FROM json_each(?))", json.dumps(list(values))


def _and_in(sql: str, args: list[Any], column: str, values: Sequence[str] | None) -> tuple[str, list[Any]]:
    """``sql`` with `` AND column IN (...)`` (``_in_list``) when ``values`` is not None."""
    if values is not None:
        clause, arg = _in_list(column, values)
        sql += f" AND {clause}"
        args.append(arg)
    return sql, args


def _and_equal(sql: str, args: list[Any], **filters: Any) -> tuple[str, list[Any]]:
    """``sql`` with `` AND column=?`` for each filter that is not None (column names are the keywords)."""
    for column, value in filters.items():
        if value is not None:
            sql += f" AND {column}=?"
            args.append(value)
    return sql, args


_PROMPT_COLUMNS = "image_id, config_hash, prompt_id, text, n_captions, trimmed, warning"
_QUERY_COLUMNS = ", ".join(f.name for f in fields(QueryRow))
_EVALUATION_COLUMNS = ", ".join(f.name for f in fields(EvaluationRow))
_STAGE_RUN_COLUMNS = ", ".join("target AS variant" if f.name == "variant" else f.name for f in fields(StageRunRow))


def _prompt_row(r: Sequence[Any]) -> PromptRow:
    return PromptRow(r[0], r[1], r[2], r[3], int(r[4]), bool(r[5]), r[6])


class Store:
    """One workspace database. Cheap to construct; connections are opened per thread on first use."""

    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root)
        self.db_path = self.root / "capsearch.db"
        self.arrays_dir = self.root / "arrays"
        if not self.db_path.exists():
            if not create:
                raise StoreError(f"no workspace at {self.root} (no capsearch.db there): create one with "
                                 f"`capsearch init -w {self.root}` or `capsearch data demo -w {self.root}`")
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.db_path.is_file():
            raise StoreError(f"{self.db_path} is not a file: choose another workspace folder")
        else:
            self._check_ours()
        self._local = threading.local()
        # One line per snapshot rebuilt because it was damaged; printed to stderr unless a caller
        # (the TUI, a test) sets its own ``on_notice``.
        self.notices: list[str] = []
        self.on_notice: Callable[[str], None] | None = None
        self._migrate()

    # -- connections -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=60.0, isolation_level=None, check_same_thread=False)
        try:
            with self._errors():
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on disk (the WAL is fsynced) before COMMIT returns, so a batch the
                # flow counts as done survives a power cut, not only a crash of the process
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=60000")
                conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        conn.row_factory = sqlite3.Row
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def notice(self, text: str) -> None:
        self.notices.append(text)
        if self.on_notice is not None:
            self.on_notice(text)
        else:
            print(f"capsearch: {text}", file=sys.stderr, flush=True)

    # -- transactions and errors ---------------------------------------------------------
    def as_store_error(self, exc: BaseException) -> BaseException | None:
        """The user-facing error for a failed SQLite call or write (None: not a store failure)."""
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            name = getattr(exc, "sqlite_errorname", "") or ""
            text = " ".join(str(exc).split())
            if code == sqlite3.SQLITE_FULL or "disk is full" in text:
                return DiskFullError(self.db_path)
            if name.startswith("SQLITE_IOERR") and self._no_room():
                return DiskFullError(self.db_path)
            if code == sqlite3.SQLITE_NOTADB or "file is not a database" in text:
                return StoreError(f"{self.db_path} is not a capsearch store (not an SQLite database): "
                                  "choose another workspace folder")
            if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "database is locked" in text:
                return None
            return StoreError(f"the workspace store {self.db_path} failed: {text} ({name or type(exc).__name__})")
        if isinstance(exc, OSError):
            from pipeline.atomic import is_disk_full

            if is_disk_full(exc):
                return DiskFullError(self.db_path)
        return None

    def _no_room(self) -> bool:
        """After an I/O error: is the disk (or this process's file size limit) full?"""
        import os
        import resource

        try:
            st = os.statvfs(self.root)
            if st.f_bavail * st.f_frsize < 4 << 20:
                return True
        except OSError:
            pass
        try:
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        except (OSError, ValueError):
            return False
        if limit == resource.RLIM_INFINITY:
            return False
        sizes = [p.stat().st_size for p in (self.db_path, self.db_path.with_name(self.db_path.name + "-wal"))
                 if p.exists()]
        return any(size + (1 << 20) >= limit for size in sizes)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            err = self.as_store_error(exc)
            if err is None:
                raise
            raise err from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; inside another one it joins it (a savepoint that rolls back alone)."""
        conn = self.conn
        self._forget_reads()             # a write on this thread: what reuse_reads() kept may be stale
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            if depth:
                name = f"capsearch_sp{depth}"
                conn.execute(f"SAVEPOINT {name}")
                try:
                    yield conn
                except BaseException:
                    _rollback(conn, f"ROLLBACK TO {name}", f"RELEASE {name}")
                    raise
                conn.execute(f"RELEASE {name}")
                return
            with self._errors():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn, "ROLLBACK")
                    raise
        finally:
            self._local.depth = depth

    @contextmanager
    def reuse_reads(self) -> Iterator[None]:
        """Within: :meth:`captions` and :meth:`reference_captions` read each (captioner, config) and the reference
        captions once on this thread and answer every later call, whatever its filters, from that read. For a
        report that asks the same questions many times (``workspace_status`` asked 20 times at 10k photos).
        A write on this thread forgets what was read; other threads and processes are not seen until the end."""
        outer = getattr(self._local, "reads", None) is not None
        if not outer:
            self._local.reads = {}
        try:
            yield
        finally:
            if not outer:
                self._local.reads = None

    def _forget_reads(self) -> None:
        if getattr(self._local, "reads", None):
            self._local.reads = {}

    def _kept(self, key: tuple, read: Callable[[], Any]) -> Any:
        """``read()`` once per ``key`` inside :meth:`reuse_reads`; None outside it."""
        kept = getattr(self._local, "reads", None)
        if kept is None:
            return None
        if key not in kept:
            kept[key] = read()
        return kept[key]

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one committed state (joins a transaction already open on this thread)."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _migrate(self) -> None:
        conn = self.conn
        with self._errors():
            current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.db_path} has schema version {current}, newer than this capsearch ({SCHEMA_VERSION}); upgrade capsearch"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                # Another process may have migrated while we waited for the lock.
                now = conn.execute("PRAGMA user_version").fetchone()[0]
                if now >= version:
                    continue
                if now == 0:
                    self._refuse_foreign(conn)
                for statement in _statements(_MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version}")

    def _check_ours(self) -> None:
        """Look at an existing file read-only first: a file of another program is refused before anything
        (even switching it to WAL) changes it."""
        conn = None
        try:
            conn = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._refuse_foreign(conn)
        except sqlite3.Error as exc:
            err = self.as_store_error(exc)
            if isinstance(err, StoreError) and "not an SQLite database" in str(err):
                raise err from exc
            # anything else (a read-only open that cannot recover the WAL, say) is left to the normal open
        finally:
            if conn is not None:
                conn.close()

    def _refuse_foreign(self, conn: sqlite3.Connection) -> None:
        """An SQLite file that holds tables but no capsearch schema belongs to something else: leave it alone."""
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        if tables:
            shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
            raise StoreError(f"{self.db_path} is an SQLite database of another program (tables {shown}), "
                             "not a capsearch store: choose another workspace folder")

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

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
            where, arg = _in_list("id", ids)
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
        sql, args = _and_equal("SELECT id, path, sha256, width, height, split, official_split, note FROM images "
                               "WHERE 1=1", [], split=split)
        sql, args = _and_in(sql, args, "id", ids)
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
        sql, args = _and_equal(sql + " WHERE 1=1", [], **{"i.split": split})
        sql, args = _and_in(sql, args, "rc.image_id", ids)
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
        clause, arg = _in_list("key", keys)
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
            clause, arg = _in_list("key", keys)
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

    def vectors_with_generation(self, space: str) -> tuple[str, list[str], Any]:
        """(generation, keys, matrix) of a whole space from one consistent read (what a snapshot holds)."""
        with self.read() as c:
            row = c.execute("SELECT COALESCE(generation, 'v' || version) FROM spaces WHERE space=?", (space,)).fetchone()
            keys, mat = self._get_vectors(space, None)
            return (row[0] if row else "none"), keys, mat

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

    def export_array(self, space: str) -> tuple[Path, Path]:
        """Make sure the space's snapshot is current and sound (rebuilding it if not); returns (data file, manifest)."""
        from pipeline.snapshots import files_for, load_snapshot

        snap = load_snapshot(self, space, self.notice)
        return snap.path, files_for(self, space).manifest

    def load_array(self, space: str) -> tuple[list[str], Any]:
        """(ids, matrix) of a space through its checked ``.npy`` snapshot (memory-mapped), rebuilt if stale or damaged."""
        from pipeline.snapshots import load_snapshot

        snap = load_snapshot(self, space, self.notice)
        return snap.ids, snap.matrix

    def delete_space(self, space: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM vectors WHERE space=?", (space,))
            c.execute("DELETE FROM spaces WHERE space=?", (space,))

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
            clause, arg = _in_list("target_id", target_ids)
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
        sql, args = _and_equal(f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE image_id=?", [image_id],
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
        sql, args = _and_equal("SELECT image_id, captioner, config_hash, text, status, error, model, prompt_id, settings, "
                               "seconds, attempts, prompt_tokens, completion_tokens FROM captions "
                               "WHERE captioner=? AND config_hash=?", [captioner, config_hash], status=status)
        sql, args = _and_in(sql, args, "image_id", ids)
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
        sql, args = _and_equal(f"SELECT {_QUERY_COLUMNS} FROM queries WHERE config_hash=?", [config_hash],
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
        sql, args = _and_equal("SELECT method, query_kind, image_id, rank, top_ids, top_scores FROM rankings "
                               "WHERE eval_hash=?", [eval_hash], method=method, query_kind=query_kind)
        return [RankingRow(m, k, i, r, tuple(json.loads(t)), tuple(json.loads(sc)))
                for m, k, i, r, t, sc in self.conn.execute(sql + " ORDER BY method, query_kind, image_id", args)]

    def put_evaluations(self, eval_hash: str, rows: Iterable[dict[str, Any]]) -> None:
        now = time.time()
        cols = ("method", "query_kind", "metric", "value", "ci_low", "ci_high", "n", "baseline", "diff",
                "diff_ci_low", "diff_ci_high", "p_value")
        with self.transaction() as c:
            c.execute("DELETE FROM evaluations WHERE eval_hash=?", (eval_hash,))
            c.executemany(
                f"INSERT INTO evaluations(eval_hash, {', '.join(cols)}, created_at) VALUES (?, {', '.join('?' * len(cols))}, ?)",
                [(eval_hash, *[r.get(col) for col in cols], now) for r in rows],
            )

    def evaluations(self, eval_hash: str | None = None) -> list[EvaluationRow]:
        """The metrics of one evaluation (the newest when no hash is given), by method, query kind and metric."""
        if eval_hash is None:
            eval_hash = self.latest_eval_hash()
            if eval_hash is None:
                return []
        return [EvaluationRow(*r) for r in self.conn.execute(
            f"SELECT {_EVALUATION_COLUMNS} FROM evaluations WHERE eval_hash=? ORDER BY method, query_kind, metric",
            (eval_hash,))]

    def latest_eval_hash(self) -> str | None:
        r = self.conn.execute("SELECT eval_hash FROM evaluations ORDER BY created_at DESC LIMIT 1").fetchone()
        return r[0] if r else None

    # -- caption metrics -----------------------------------------------------------------------------------
    def put_caption_metric_row(self, row: StoredCaptionRow) -> None:
        """Store (or replace) one caption-metrics row: its photos and per-photo scores, in one transaction."""
        h = row.row_hash
        with self.transaction() as c:
            self._delete_caption_metric_rows(c, [h])
            c.execute("INSERT INTO caption_metric_rows(row_hash, row, vocabulary, distinct_share, shown, seconds, "
                      "created_at) VALUES (?,?,?,?,?,?,?)",
                      (h, row.row, row.vocabulary, row.distinct, row.shown, row.seconds, time.time()))
            c.executemany(
                "INSERT INTO caption_metric_photos(row_hash, idx, image_id, caption, bleu_stats, meteor_stats) "
                "VALUES (?,?,?,?,?,?)",
                [(h, n, p.image_id, p.caption, _json_list(p.bleu_stats), _json_list(p.meteor_stats))
                 for n, p in enumerate(row.photos)])
            c.executemany("INSERT INTO caption_metric_scores(row_hash, metric, image_id, value) VALUES (?,?,?,?)",
                          [(h, s.metric, s.image_id, s.value) for s in row.scores])

    @staticmethod
    def _delete_caption_metric_rows(c: sqlite3.Connection, hashes: Sequence[str]) -> None:
        for table in ("caption_metric_rows", "caption_metric_photos", "caption_metric_scores"):
            c.executemany(f"DELETE FROM {table} WHERE row_hash=?", [(h,) for h in hashes])

    def stored_caption_metric_rows(self, hashes: Iterable[str]) -> set[str]:
        """Which of these row hashes have their row stored."""
        wanted = sorted(set(hashes))
        if not wanted:
            return set()
        marks = ",".join("?" * len(wanted))
        return {r[0] for r in self.conn.execute(f"SELECT row_hash FROM caption_metric_rows WHERE row_hash IN ({marks})",
                                                wanted)}

    def caption_metric_row(self, row_hash: str) -> StoredCaptionRow | None:
        with self.read() as c:
            head = c.execute("SELECT row, vocabulary, distinct_share, shown, seconds FROM caption_metric_rows "
                             "WHERE row_hash=?", (row_hash,)).fetchone()
            if head is None:
                return None
            photos = tuple(
                CaptionMetricPhoto(r[0], r[1], _from_json_list(r[2]), _from_json_list(r[3]))
                for r in c.execute("SELECT image_id, caption, bleu_stats, meteor_stats FROM caption_metric_photos "
                                   "WHERE row_hash=? ORDER BY idx", (row_hash,)))
            scores = tuple(CaptionMetricScore(*r) for r in c.execute(
                "SELECT s.image_id, s.metric, s.value FROM caption_metric_scores s LEFT JOIN caption_metric_photos p "
                "ON p.row_hash=s.row_hash AND p.image_id=s.image_id WHERE s.row_hash=? ORDER BY s.metric, p.idx, s.image_id",
                (row_hash,)))
        return StoredCaptionRow(row_hash, head[0], head[1], head[2], head[3], head[4], photos, scores)

    def put_caption_metric_summary(self, summary: StoredCaptionSummary) -> None:
        """Store (or replace) the summary of one caption-metrics configuration, in one transaction."""
        h = summary.config_hash
        with self.transaction() as c:
            for table in ("caption_metric_summaries", "caption_metric_summary_rows", "caption_metric_summary_metrics",
                          "caption_metric_values"):
                c.execute(f"DELETE FROM {table} WHERE config_hash=?", (h,))
            c.execute("INSERT INTO caption_metric_summaries(config_hash, baseline, n_photos, tokenizer, reference_rule, "
                      "n_boot, confidence, notes, seconds, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                      (h, summary.baseline, summary.n_photos, summary.tokenizer, summary.reference_rule,
                       summary.n_boot, summary.confidence, json.dumps(list(summary.notes)), summary.seconds,
                       summary.created_at))
            c.executemany("INSERT INTO caption_metric_summary_rows(config_hash, position, row, row_hash, missing) "
                          "VALUES (?,?,?,?,?)",
                          [(h, n, r.row, r.row_hash, r.missing) for n, r in enumerate(summary.rows)])
            c.executemany("INSERT INTO caption_metric_summary_metrics(config_hash, position, metric, reason) "
                          "VALUES (?,?,?,?)",
                          [(h, n, m, None) for n, m in enumerate(summary.metrics)]
                          + [(h, n, m, why) for n, (m, why) in enumerate(summary.not_computed)])
            c.executemany(
                "INSERT INTO caption_metric_values(config_hash, row, metric, value, ci_low, ci_high, n, baseline, diff, "
                "diff_ci_low, diff_ci_high, p_value) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(h, v.row, v.metric, v.value, v.ci_low, v.ci_high, v.n, v.baseline, v.diff, v.diff_ci_low,
                  v.diff_ci_high, v.p_value) for v in summary.values])

    def caption_metric_summary(self, config_hash: str) -> StoredCaptionSummary | None:
        with self.read() as c:
            head = c.execute("SELECT baseline, n_photos, tokenizer, reference_rule, n_boot, confidence, notes, seconds, "
                             "created_at FROM caption_metric_summaries WHERE config_hash=?", (config_hash,)).fetchone()
            if head is None:
                return None
            rows = tuple(CaptionSummaryRow(*r) for r in c.execute(
                "SELECT row, row_hash, missing FROM caption_metric_summary_rows WHERE config_hash=? ORDER BY position",
                (config_hash,)))
            metrics = c.execute("SELECT metric, reason FROM caption_metric_summary_metrics WHERE config_hash=? "
                                "ORDER BY position, metric", (config_hash,)).fetchall()
            position = {r.row: n for n, r in enumerate(rows)}
            values = sorted(
                (CaptionMetricValue(*r) for r in c.execute(
                    "SELECT row, metric, value, ci_low, ci_high, n, baseline, diff, diff_ci_low, diff_ci_high, p_value "
                    "FROM caption_metric_values WHERE config_hash=?", (config_hash,))),
                key=lambda v: (position.get(v.row, len(position)), v.row, v.metric))
        return StoredCaptionSummary(
            config_hash, head[0], head[1], head[2], head[3], head[4], head[5], tuple(json.loads(head[6])), head[7],
            head[8], rows, tuple(m for m, why in metrics if why is None),
            tuple((m, why) for m, why in metrics if why is not None), tuple(values))

    def has_caption_metric_summary(self, config_hash: str) -> bool:
        return self.conn.execute("SELECT 1 FROM caption_metric_summaries WHERE config_hash=?",
                                 (config_hash,)).fetchone() is not None

    def latest_caption_metric_hash(self) -> str | None:
        """The configuration hash of the newest caption-metrics summary (None: none stored)."""
        r = self.conn.execute("SELECT config_hash FROM caption_metric_summaries "
                              "ORDER BY created_at DESC, config_hash LIMIT 1").fetchone()
        return r[0] if r else None

    def delete_caption_metrics(self) -> None:
        """Forget every caption-metrics row and summary (the stage computes them again)."""
        with self.transaction() as c:
            for table in ("caption_metric_rows", "caption_metric_photos", "caption_metric_scores",
                          "caption_metric_summaries", "caption_metric_summary_rows", "caption_metric_summary_metrics",
                          "caption_metric_values"):
                c.execute(f"DELETE FROM {table}")

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
                (stage, target, config_hash, "running", time.time(), flow_run_id, json.dumps(config or {}, sort_keys=True),
                 current_owner(), run_id),
            )
            return int(cur.lastrowid)

    def finish_stage_run(self, run_id: int, status: str, done: int = 0, failed: int = 0, skipped: int = 0,
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
            dead = [r[0] for r in c.execute("SELECT id, owner FROM stage_runs WHERE status='running'")
                    if owner_state(r[1]) == "dead"]
            c.executemany(
                "UPDATE stage_runs SET status='crashed', finished_at=?, "
                "message=COALESCE(message, 'its process ended without finishing it') WHERE id=? AND status='running'",
                [(time.time(), i) for i in dead])
            return len(dead)

    def stage_runs(self, stage: str | None = None, limit: int = 50) -> list[StageRunRow]:
        """The newest stage runs (of ``stage``) first; a run whose process ended while it ran reads ``crashed``
        at once (the next run that starts records it so)."""
        sql, args = _and_equal(f"SELECT {_STAGE_RUN_COLUMNS} FROM stage_runs WHERE 1=1", [], stage=stage)
        rows = [StageRunRow(*r) for r in self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])]
        return [replace(r, status="crashed") if r.status == "running" and owner_state(r.owner) == "dead" else r
                for r in rows]
