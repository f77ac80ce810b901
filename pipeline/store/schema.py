"""The workspace store's schema: every table, as the migrations that made it, and the checks before migrating.

A database's ``PRAGMA user_version`` says which migrations it has had; opening a store runs the missing
ones, each in its own transaction (``migrate``), after refusing an SQLite file of another program
(``check_ours``, read-only, before anything changes it).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from pipeline.errors import StoreError

SCHEMA_VERSION = 6

MIGRATIONS: dict[int, str] = {
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
        state TEXT NOT NULL,             -- 'running' | 'completed' | 'not applicable' (older: 'finished', 'not-applicable')
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


def statements(script: str) -> Iterator[str]:
    """Split a SQL script into complete statements (comments may contain semicolons)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if buf.strip():
        yield buf




def refuse_foreign(conn: sqlite3.Connection, db_path: Path) -> None:
    """An SQLite file that holds tables but no capsearch schema belongs to something else: leave it alone."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    if tables:
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        raise StoreError(f"{db_path} is an SQLite database of another program (tables {shown}), "
                         "not a capsearch store: choose another workspace folder")


def check_ours(db_path: Path, as_store_error: Callable[[BaseException], BaseException | None]) -> None:
    """Look at an existing file read-only first: a file of another program is refused before anything
    (even switching it to WAL) changes it."""
    conn = None
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            refuse_foreign(conn, db_path)
    except sqlite3.Error as exc:
        err = as_store_error(exc)
        if isinstance(err, StoreError) and "not an SQLite database" in str(err):
            raise err from exc
        # anything else (a read-only open that cannot recover the WAL, say) is left to the normal open
    finally:
        if conn is not None:
            conn.close()


def migrate(conn: sqlite3.Connection, db_path: Path, transaction: Callable[[], ContextManager[object]]) -> None:
    """Run the migrations the database has not had, each in its own ``transaction()``."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{db_path} has schema version {current}, newer than this capsearch ({SCHEMA_VERSION}); upgrade capsearch"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        with transaction():
            # Another process may have migrated while we waited for the lock.
            now = conn.execute("PRAGMA user_version").fetchone()[0]
            if now >= version:
                continue
            if now == 0:
                refuse_foreign(conn, db_path)
            for statement in statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version}")
