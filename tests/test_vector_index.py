"""The approximate index: recall on a generated collection above the threshold, incremental updates and the
rebuild past REBUILD_SHARE, a damaged index rebuilt with a notice, another embedder rebuilding it, the threshold
switch for neighbours and search, ``--exact``, and what ``status`` shows."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bench.ann_choice import clustered
from pipeline.config_file import update_config_file
from pipeline.distinct import DistinctRows
from pipeline.neighbours import find_neighbours
from pipeline.search_service import CAPTIONS, SearchIndex
from pipeline.stage_keys import stage_hash
from pipeline.stages.registry import build_stage
from pipeline.stages.run import run_stage
from pipeline.status import workspace_status
from pipeline.vector_index import Approximate, ensure, index_folder, load
from pipeline.workspace import Workspace
from tests.fixtures.cli import run_cli
from tests.fixtures.text_worlds import text_world

pytest.importorskip("faiss")


class Notices(list):
    def __call__(self, text: str) -> None:
        self.append(text)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    """A copy of the shared demo workspace (100 photos, every stage run) to change."""
    shutil.copytree(text_world(), tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def configure(ws: Workspace, **sections) -> Workspace:
    update_config_file(ws.config_path, sections)
    ws.reload_config()
    return ws


def keyed(n: int, dim: int, seed: int, prefix: str = "k") -> tuple[list[str], np.ndarray]:
    return [f"{prefix}{seed}-{i:06d}" for i in range(n)], clustered(n, dim, seed=seed)


def generation(ws: Workspace, name: str) -> str:
    """The generation the index's manifest names (new at every save)."""
    return json.loads((index_folder(ws.store) / f"{name}.json").read_text())["generation"]


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / 10 for a, b in zip(found, truth)]))


def test_recall_at_10_against_exact_search_on_a_generated_collection(ws):
    """30,000 clustered vectors (far above a threshold of 1,000): neighbours through the index at the default
    probes find at least 98 % of exact search's top 10, as the recall the index measured at build says."""
    configure(ws, index={"approximate_above": 1000})
    keys, vecs = keyed(30_000, 64, seed=1)
    index = ensure(ws.store, "test", "space/a", keys, vecs, ws.config.index.probes)
    assert index.rows == 30_000 and index.meta["lists"] > 100
    assert index.meta["recall_at_10"] >= 0.98
    db = DistinctRows.of(vecs)
    approx = Approximate(index, index.label_rows({k: i for i, k in enumerate(keys)}), ws.config.index.probes)
    queries = clustered(300, 64, seed=2)
    exact = find_neighbours(queries, db, 10)
    found = find_neighbours(queries, db, 10, approximate=approx)
    assert recall_at_10(found.indices, exact.indices) >= 0.98
    # a neighbour the index found is scored exactly: the same score as exact search gives that photo
    same = found.indices == exact.indices
    np.testing.assert_allclose(found.scores[same], exact.scores[same], atol=1e-6)
    # one probe finds less: the knob trades recall for speed
    fewer = Approximate(index, approx.label_row, 1)
    assert recall_at_10(find_neighbours(queries, db, 10, approximate=fewer).indices, exact.indices) < 0.9
    # the same index file gives the same lists every time
    again = load(index_folder(ws.store), "test")
    approx2 = Approximate(again, again.label_rows({k: i for i, k in enumerate(keys)}), ws.config.index.probes)
    np.testing.assert_array_equal(find_neighbours(queries, db, 10, approximate=approx2).indices, found.indices)


def test_photos_added_and_removed_update_the_index_without_a_rebuild(ws):
    keys, vecs = keyed(4000, 32, seed=3)
    first = ensure(ws.store, "test", "space/a", keys, vecs, 8)
    assert first.meta["built_rows"] == 4000 and first.meta["changed_since_build"] == 0
    # 5 % removed, 5 % added: updated in place
    new_keys, new_vecs = keyed(200, 32, seed=4, prefix="new")
    keys2 = keys[200:] + new_keys
    vecs2 = np.concatenate([vecs[200:], new_vecs])
    second = ensure(ws.store, "test", "space/a", keys2, vecs2, 8)
    assert second.meta["built_rows"] == 4000 and second.meta["changed_since_build"] == 400
    assert second.rows == 4000 and set(second.labels()) == set(keys2)
    found = second.candidates(new_vecs[:20], 5, probes=second.meta["lists"])
    assert [second.keys[f[0]] for f in found] == new_keys[:20]          # an added vector finds itself
    gone = second.candidates(vecs[:200], 40, probes=second.meta["lists"])
    assert not {second.keys[label] for label in gone.ravel() if label >= 0} & set(keys[:200])
    assert load(index_folder(ws.store), "test").meta["changed_since_build"] == 400    # saved
    # nothing changed: the stored index as it is (not written again)
    before = generation(ws, "test")
    ensure(ws.store, "test", "space/a", keys2, vecs2, 8)
    assert generation(ws, "test") == before
    # past a quarter of the built size changed: built again on the collection as it is now
    more_keys, more_vecs = keyed(1000, 32, seed=5, prefix="more")
    third = ensure(ws.store, "test", "space/a", keys2 + more_keys, np.concatenate([vecs2, more_vecs]), 8)
    assert third.meta["built_rows"] == 5000 and third.meta["changed_since_build"] == 0


@pytest.mark.parametrize("damage", ["truncated", "flipped", "manifest", "keys"])
def test_a_damaged_index_is_rebuilt_with_a_notice(ws, damage):
    keys, vecs = keyed(3000, 32, seed=6)
    built = ensure(ws.store, "test", "space/a", keys, vecs, 8)
    folder = index_folder(ws.store)
    manifest = json.loads((folder / "test.json").read_text())
    data = folder / manifest["files"]["index"]["file"]
    if damage == "truncated":
        data.write_bytes(data.read_bytes()[:1000])
    elif damage == "flipped":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "manifest":
        (folder / "test.json").write_text("{not json")
    else:
        (folder / manifest["files"]["keys"]["file"]).write_text(json.dumps(list(reversed(keys))))
    notices = Notices()
    rebuilt = ensure(ws.store, "test", "space/a", keys, vecs, 8, notice=notices)
    assert len(notices) == 1 and notices[0].startswith("index test was damaged (") and "rebuilt" in notices[0]
    assert rebuilt.meta["updated"] and rebuilt.rows == 3000
    q = vecs[:50]
    np.testing.assert_array_equal(rebuilt.candidates(q, 10), built.candidates(q, 10))
    assert load(folder, "test") is not None                                        # sound again
    assert ensure(ws.store, "test", "space/a", keys, vecs, 8, notice=notices) and len(notices) == 1


def test_another_embedder_rebuilds_the_index(ws):
    keys, vecs = keyed(2000, 32, seed=7)
    ensure(ws.store, "test", "image/old-embedder", keys, vecs, 8)
    other = clustered(2000, 16, seed=8)
    index = ensure(ws.store, "test", "image/new-embedder", keys, other, 8)
    assert index.space == "image/new-embedder" and index.index.d == 16 and index.meta["changed_since_build"] == 0


def test_neighbours_switch_to_the_index_above_the_threshold_and_status_shows_its_recall(ws):
    """Above index.approximate_above reference photos the stage goes through the index (one list here, so every
    list is probed and the lists equal exact search's); at or below it, or with 0, it does not."""
    exact_hash = stage_hash(ws, "neighbours")
    exact = ws.store.neighbours(exact_hash, ws.store.image_ids("target"))
    stage = build_stage(ws, "neighbours")
    n_db = len(stage.reference_matrix()[0])
    assert not stage.approximate(n_db)                                   # the default threshold: far above
    configure(ws, index={"approximate_above": n_db})
    assert not build_stage(ws, "neighbours").approximate(n_db)           # at the threshold: exact
    configure(ws, index={"approximate_above": n_db - 1})
    assert build_stage(ws, "neighbours").approximate(n_db)
    assert stage_hash(ws, "neighbours") == exact_hash                    # auto keeps the stored lists
    configure(ws, neighbours={"index": "approximate"})                   # a new configuration: computed again
    outcome = run_stage(build_stage(ws, "neighbours"))
    assert outcome.status == "completed" and outcome.items == len(exact)
    assert (index_folder(ws.store) / "neighbours.json").exists()
    approx = ws.store.neighbours(stage_hash(ws, "neighbours"), ws.store.image_ids("target"))
    assert {t: [(n.id, n.duplicate) for n in ns] for t, ns in approx.items()} == \
        {t: [(n.id, n.duplicate) for n in ns] for t, ns in exact.items()}
    report = workspace_status(ws)
    (info,) = [i for i in report.indexes if i.name == "neighbours"]
    assert info.rows == n_db and info.recall_at_10 == 1.0
    assert report.as_dict()["indexes"][0]["recall_at_10"] == 1.0
    configure(ws, index={"approximate_above": 0}, neighbours={"index": "auto"})
    assert not build_stage(ws, "neighbours").approximate(n_db)           # 0: never


def test_search_switches_to_the_index_above_the_threshold_and_exact_never_does(ws, capsys, monkeypatch):
    n_photos = len(ws.store.image_ids())
    configure(ws, index={"approximate_above": n_photos - 1})
    approximate, exact = SearchIndex(ws), SearchIndex(ws, exact=True)
    assert approximate.approximated(CAPTIONS) and not exact.approximated(CAPTIONS)
    for query in ("a red car", "dog on the grass", "two blue balls", "a yellow bird near a tree"):
        for k in (1, 5, 30):
            got, want = approximate.search(query, CAPTIONS, k), exact.search(query, CAPTIONS, k)
            assert [(h.image_id, h.rank, h.caption, h.matched) for h in got] == \
                [(h.image_id, h.rank, h.caption, h.matched) for h in want], (query, k)
            # the candidates are scored exactly: a dot product in another matrix shape, the same to float rounding
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-6)
    assert (index_folder(ws.store) / f"search-{CAPTIONS}.json").exists()
    monkeypatch.setenv("CAPSEARCH_HOME", str(ws.root.parent))
    code, out, _ = run_cli(capsys, "search", "a red car", "-w", str(ws.root), "--json")
    assert code == 0 and json.loads(out)["approximate"] is True
    code, out_exact, _ = run_cli(capsys, "search", "a red car", "-w", str(ws.root), "--json", "--exact")
    assert code == 0 and json.loads(out_exact)["approximate"] is False
    assert [h["image_id"] for h in json.loads(out)["hits"]] == [h["image_id"] for h in json.loads(out_exact)["hits"]]
    code, text, _ = run_cli(capsys, "search", "a red car", "-w", str(ws.root))
    assert code == 0 and "through the approximate index (recall@10 1.000" in " ".join(text.split())
    configure(ws, index={"approximate_above": n_photos})                 # at the threshold: exact
    assert not SearchIndex(ws).approximated(CAPTIONS)


def test_the_caption_embedding_stage_keeps_the_search_index_current(ws):
    """Past the threshold, embed-captions brings the search index up to date when it exports its vectors, so a
    search finds it current; below it, no index is made."""
    folder = index_folder(ws.store)
    run_stage(build_stage(ws, "embed-captions", "human"))
    assert not (folder / f"search-{CAPTIONS}.json").exists()
    configure(ws, index={"approximate_above": 10})
    run_stage(build_stage(ws, "embed-captions", "human"))
    stored = load(folder, f"search-{CAPTIONS}")
    assert stored is not None and stored.rows == SearchIndex(ws).multi[CAPTIONS].rows.vectors.shape[0]
    assert [i.name for i in workspace_status(ws).indexes] == [f"search-{CAPTIONS}"]
    before = generation(ws, f"search-{CAPTIONS}")
    SearchIndex(ws).search("a red car", CAPTIONS, 5)                     # current: loaded as it is, not rebuilt
    assert generation(ws, f"search-{CAPTIONS}") == before


def test_vectors_read_from_a_memory_mapped_snapshot_in_blocks_give_the_same_results(tmp_path):
    """A DB that is a permuted subset of a memory-mapped .npy (what the neighbours stage and search hold: read
    with pread in file order, never copied whole) groups, scores and ranks exactly as the same rows in memory,
    identical vectors included, whatever the block size."""
    from pipeline.distinct import FileRows, RowSubset
    from pipeline.search import top_k_batch

    rng = np.random.default_rng(11)
    space = clustered(3000, 24, seed=9)
    space[100] = space[7]                                                # two photos, one vector
    np.save(tmp_path / "space.npy", space)
    mapped = np.load(tmp_path / "space.npy", mmap_mode="r")
    src = rng.permutation(3000)[:2500]
    in_memory = DistinctRows.from_rows(2500, np.arange(2500), src, space)
    on_disk = DistinctRows.from_rows(2500, np.arange(2500), src, mapped)
    assert isinstance(on_disk.vectors, RowSubset) and FileRows.of(mapped) is not None
    np.testing.assert_array_equal(on_disk.owner, in_memory.owner)
    queries = clustered(40, 24, seed=10)
    np.testing.assert_allclose(on_disk.score(queries), in_memory.score(queries), atol=1e-6)
    for block in (1, 7, 500, 4096):
        a = top_k_batch(queries, on_disk, 15, block_size=block)
        b = top_k_batch(queries, in_memory, 15, block_size=block)
        np.testing.assert_array_equal(a[0], b[0])
    for db_block in (3, 64, None):
        exact_disk = find_neighbours(queries, on_disk, 8, db_block_size=db_block)
        exact_mem = find_neighbours(queries, in_memory, 8, db_block_size=db_block)
        np.testing.assert_array_equal(exact_disk.indices, exact_mem.indices)
