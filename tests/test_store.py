"""The workspace store: schema, idempotent upserts, vectors, concurrent read during write."""
from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.snapshots import export_array, load_array
from pipeline.store import SCHEMA_VERSION, Store
from pipeline.store_rows import ImageRow


def _images(n):
    return [ImageRow(f"img{i:04d}.jpg", f"img{i:04d}.jpg", f"{i:064x}", 10, 10, "target" if i % 2 else "reference")
            for i in range(n)]


def user_version(store: Store) -> int:
    """The schema version the store's database records (its migrations)."""
    return store.conn.execute("PRAGMA user_version").fetchone()[0]


def test_schema_is_versioned_and_wal(tmp_path):
    store = Store(tmp_path)
    assert user_version(store) == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    Store(tmp_path)  # re-opening migrates nothing and fails nothing


def test_newer_schema_is_refused(tmp_path):
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "capsearch.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this capsearch"):
        Store(tmp_path)


def test_upserts_are_idempotent_and_line_up_by_image_id(tmp_path):
    store = Store(tmp_path)
    store.upsert_images(_images(10))
    store.upsert_images(_images(10))
    assert store.count_images() == 10
    rows = [{"image_id": f"img{i:04d}.jpg", "text": f"caption {i}", "status": "ok", "model": "m", "settings": {"a": 1}}
            for i in range(10)]
    for captioner in ("a", "b"):
        store.put_captions(captioner, "h1", rows)
        store.put_captions(captioner, "h1", rows)  # a re-run of the same batch
    assert store.conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0] == 20
    a, b = store.captions("a", "h1"), store.captions("b", "h1")
    assert a.keys() == b.keys()
    assert a["img0003.jpg"].settings == {"a": 1}
    # a different configuration hash is a different row, the old one is kept
    store.put_captions("a", "h2", rows[:3])
    assert len(store.captions("a", "h1")) == 10 and len(store.captions("a", "h2")) == 3


def test_vectors_round_trip_and_snapshot(tmp_path):
    store = Store(tmp_path)
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(6, 4)).astype(np.float32)
    keys = [f"k{i}" for i in range(6)]
    store.put_vectors("image/test", keys[:3], mat[:3])
    store.put_vectors("image/test", keys[3:], mat[3:])
    store.put_vectors("image/test", keys[:1], mat[:1])  # idempotent
    got_keys, got = store.get_vectors("image/test", ["k4", "k0", "missing"])
    assert got_keys == ["k4", "k0"]
    np.testing.assert_array_equal(got, mat[[4, 0]])
    assert store.has_vectors("image/test", keys + ["x"]) == set(keys)
    ids, arr = load_array(store, "image/test")
    assert ids == sorted(keys) and arr.shape == (6, 4)
    npy, _ = export_array(store, "image/test")
    mtime = npy.stat().st_mtime_ns
    export_array(store, "image/test")
    assert npy.stat().st_mtime_ns == mtime  # unchanged space: not rewritten
    store.put_vectors("image/test", ["k9"], mat[:1])
    ids, arr = load_array(store, "image/test")
    assert len(ids) == 7 and arr.shape == (7, 4)
    with pytest.raises(StoreError, match="dimension"):
        store.put_vectors("image/test", ["z"], np.zeros((1, 5), dtype=np.float32))


def test_reader_reads_while_writer_writes(tmp_path):
    """A second connection (the TUI) reads consistent counts while a writer commits batches."""
    writer = Store(tmp_path)
    writer.upsert_images(_images(200))
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read():
        reader = Store(tmp_path)  # its own connection, as the TUI has
        try:
            while not stop.is_set():
                n = reader.conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0]
                assert n % 20 == 0  # never a half-written batch
                seen.append(n)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=read)
    t.start()
    for batch in range(10):
        rows = [{"image_id": f"img{i:04d}.jpg", "text": "x", "status": "ok"} for i in range(batch * 20, batch * 20 + 20)]
        writer.put_captions("c", "h", rows)
        time.sleep(0.01)
    stop.set()
    t.join()
    assert not errors
    assert seen == sorted(seen) and seen[-1] <= 200 and len(seen) > 3


def test_splits_and_reference_db_excludes_targets(tmp_path):
    store = Store(tmp_path)
    store.upsert_images(_images(6))
    store.replace_reference_captions({f"img{i:04d}.jpg": [f"cap {i} a", f"cap {i} b"] for i in range(6)})
    db = store.reference_db_captions()
    assert set(db) == {"img0000.jpg", "img0002.jpg", "img0004.jpg"}
    assert all(store.image(i).split == "reference" for i in db)


def test_reuse_reads_answers_every_filter_as_sql_does_and_sees_its_own_writes(tmp_path):
    store = Store(tmp_path)
    store.upsert_images(_images(8))
    store.replace_reference_captions({f"img{i:04d}.jpg": [f"cap {i} a", f"cap {i} b"] for i in range(0, 8, 3)})
    store.put_captions("a", "h1", [{"image_id": f"img{i:04d}.jpg", "text": f"caption {i}", "model": "m",
                                    "status": "ok" if i % 3 else "failed", "error": None if i % 3 else "bad photo"}
                                   for i in range(7)])
    asks = [((), {}), ((["img0003.jpg", "img0006.jpg", "absent.jpg"],), {}), ((), {"split": "target"}),
            ((["img0000.jpg", "img0003.jpg"],), {"split": "reference"}), (([],), {})]
    caption_asks = [{}, {"status": "ok"}, {"status": "failed"}, {"ids": ["img0001.jpg", "img0003.jpg", "absent.jpg"]},
                    {"ids": ["img0001.jpg", "img0003.jpg"], "status": "ok"}, {"ids": []}]

    def answers():
        return ([store.reference_captions(*a, **k) for a, k in asks],
                [store.captions("a", "h1", **k) for k in caption_asks], store.captions("a", "other"))

    plain = answers()
    with store.reuse_reads():
        assert answers() == plain
        assert answers() == plain
        store.reference_captions()["img0000.jpg"].append("changed by a caller")    # a caller's copy, not the kept one
        assert answers() == plain
        # this thread writes: later answers see it
        store.put_captions("a", "h1", [{"image_id": "img0007.jpg", "text": "caption 7", "status": "ok"}])
        store.replace_reference_captions({"img0001.jpg": ["new cap"]})
        assert "img0007.jpg" in store.captions("a", "h1", status="ok")
        assert store.reference_captions(["img0001.jpg"]) == {"img0001.jpg": ["new cap"]}
        inside = answers()
    assert inside == answers()
    assert answers() != plain


def test_images_by_id_are_looked_up_in_sql_sorted_by_id_and_filtered_by_split(tmp_path):
    store = Store(tmp_path)
    store.upsert_images(_images(1300))
    asked = [f"img{i:04d}.jpg" for i in range(1299, -1, -2)] + ["img0003.jpg", "absent.jpg"]   # > one IN chunk
    rows = store.images(ids=asked)
    assert [r.id for r in rows] == sorted(set(asked) - {"absent.jpg"})        # once each, by id, unknown ids left out
    assert rows[0] == ImageRow("img0001.jpg", "img0001.jpg", f"{1:064x}", 10, 10, "target")
    assert [r.id for r in store.images("reference", ids=["img0002.jpg", "img0003.jpg"])] == ["img0002.jpg"]
    assert store.images(ids=[]) == []
    assert [r.id for r in store.images()] == sorted(r.id for r in _images(1300))


def test_rows_come_back_typed(tmp_path):
    store = Store(tmp_path)
    store.put_queries("q", [{"image_id": "a.jpg", "kind": "detail", "generator": "reference", "text": "a dog",
                             "status": "ok", "source_caption_idx": 2}])
    (query,) = store.queries("q")
    assert (query.image_id, query.kind, query.text, query.source_caption_idx, query.status) == ("a.jpg", "detail",
                                                                                              "a dog", 2, "ok")
    store.put_rankings("e", [("knn", "detail", "a.jpg", 1.5, ["b.jpg", "a.jpg"], [0.9, 0.9])])
    (ranking,) = store.rankings("e")
    assert (ranking.rank, ranking.top_ids, ranking.top_scores) == (1.5, ("b.jpg", "a.jpg"), (0.9, 0.9))
    store.put_neighbours("n", [("a.jpg", 1, "b.jpg", 0.8, 1), ("a.jpg", 2, "c.jpg", 0.5, 0)])
    assert [(n.id, n.score, n.duplicate) for n in store.neighbours("n")["a.jpg"]] == [("b.jpg", 0.8, 1), ("c.jpg", 0.5, 0)]
    assert store.latest_neighbours_hash("a.jpg") == "n" and store.latest_neighbours_hash("b.jpg") is None
    store.put_prompts("p", [("a.jpg", "pid", "Describe it.", 3, True, "trimmed to fit")])
    prompt = store.prompt_for("a.jpg")
    assert prompt == store.prompts("p")["a.jpg"] and (prompt.text, prompt.trimmed, prompt.warning) == (
        "Describe it.", True, "trimmed to fit")


def test_stage_runs_and_problems(tmp_path):
    store = Store(tmp_path)
    run = store.start_stage_run("ingest", "abc", {"x": 1})
    store.finish_stage_run(run, "completed", done=3)
    assert store.stage_runs()[0].status == "completed"
    store.record_problems("ingest", [("a.jpg", "skipped", "corrupt")])
    store.record_problems("ingest", [("a.jpg", "skipped", "still corrupt")])
    assert [p.reason for p in store.problems()] == ["still corrupt"]
    store.clear_problems("ingest", ["a.jpg"])
    assert store.problems() == []


def test_nested_transactions_commit_together_or_not_at_all(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.upsert_images(_images(4))                       # joins the outer transaction
            store.replace_reference_captions({"img0000.jpg": ["a"]})
            raise RuntimeError("crash between two writes of one batch")
    assert store.count_images() == 0 and store.reference_captions() == {}
    with store.transaction():
        store.upsert_images(_images(4))
        try:
            with store.transaction():                              # an inner failure rolls back alone
                store.set_meta("x", 1)
                raise ValueError("inner")
        except ValueError:
            pass
        store.set_meta("y", 2)
    assert store.count_images() == 4 and store.get_meta("x") is None and store.get_meta("y") == 2


def test_a_run_left_running_by_a_dead_process_is_marked_crashed_but_a_live_one_is_not(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    Store(tmp_path).close()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pipeline.store import Store; "
         "print(Store(sys.argv[1]).start_stage_run('ingest', 'h'), flush=True); sys.stdin.read()", str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        run_id = int(child.stdout.readline())
        store = Store(tmp_path)
        assert store.mark_crashed_runs() == 0                      # its process is alive: still running
        assert store.stage_runs()[0].status == "running"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert store.stage_runs()[0].status == "crashed"            # shown so at once ...
    mine = store.start_stage_run("embed-images", "h")              # ... and recorded by the next run
    rows = {r.id: r for r in store.stage_runs()}
    assert rows[run_id].status == "crashed" and "ended without finishing" in rows[run_id].message
    assert rows[mine].status == "running"                       # this process's own run is alive


def test_a_reused_pid_does_not_keep_a_dead_run_alive(tmp_path):
    import json

    from pipeline.run_owner import current_owner

    store = Store(tmp_path)
    run = store.start_stage_run("ingest", "h")
    impostor = {**json.loads(current_owner()), "start": "1"}      # our pid, another process's start time
    store.conn.execute("UPDATE stage_runs SET owner=? WHERE id=?", (json.dumps(impostor), run))
    assert store.mark_crashed_runs() == 1


def test_a_store_of_schema_1_is_migrated(tmp_path):
    from pipeline.store.schema import MIGRATIONS

    conn = sqlite3.connect(tmp_path / "capsearch.db")
    conn.executescript(MIGRATIONS[1])
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO stage_runs(stage, config_hash, status, started_at) VALUES ('ingest', 'h', 'running', 1)")
    conn.execute("INSERT INTO spaces(space, dim, version) VALUES ('image/x', 2, 3)")
    conn.commit()
    conn.close()
    store = Store(tmp_path)
    assert user_version(store) == SCHEMA_VERSION
    assert store.stage_runs()[0].status == "crashed"
    assert store.space_state("image/x")[0] == "v3"                # the old counter until the next write


def test_a_store_of_schema_2_loses_its_caption_metric_blobs(tmp_path):
    """Schema 2 kept caption metrics as JSON in meta; schema 3 keeps them in tables and drops the blobs (the
    stage computes them again), leaving every other meta key alone."""
    from pipeline.store.schema import MIGRATIONS

    conn = sqlite3.connect(tmp_path / "capsearch.db")
    for version in (1, 2):
        conn.executescript(MIGRATIONS[version])
    conn.execute("PRAGMA user_version=2")
    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                     [("caption-metrics/row/abc", "{}"), ("caption-metrics/def", "{}"), ("caption-metrics/latest", '"def"'),
                      ("evaluation/xyz", "{}"), ("split_hash", '"s"')])
    conn.commit()
    conn.close()
    store = Store(tmp_path)
    assert user_version(store) == SCHEMA_VERSION
    assert sorted(r[0] for r in store.conn.execute("SELECT key FROM meta")) == ["evaluation/xyz", "split_hash"]
    assert store.caption_metrics.latest_hash() is None and store.caption_metrics.stored_rows(["abc"]) == set()
