"""Snapshots that prove themselves: damaged ones are found and rebuilt from the store (search results as
before, one notice line), and readers never see ids and vectors that do not belong together, even with
two writers replacing the snapshot meanwhile (real processes)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.keys import document_space
from pipeline.snapshots import export_array, files_for, load_array
from pipeline.stages.run import run_stage
from pipeline.stages.registry import pipeline_stages
from pipeline.store import Store
from pipeline.text_models import build_text_embedder
from pipeline.workspace import Workspace
from tests.fixtures.cli import run_cli
from tests.fixtures.store_content import diff_searches, search_results

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tui_workspace):
    """A copy of the session's workspace taken through every stage (tests.fixtures.tui_world), and its search
    results while nothing is damaged."""
    root = tmp_path_factory.mktemp("snapshots") / "ws"
    shutil.copytree(tui_workspace.root, root, ignore=shutil.ignore_patterns("logs"))
    return root, search_results(Workspace(root))


def _doc_files(ws: Workspace):
    files = files_for(ws.store, document_space(build_text_embedder(ws.config).key))
    manifest = json.loads(files.manifest.read_text())
    return files, manifest, files.folder / manifest["file"]


def _truncate(files, manifest, data):
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _empty(files, manifest, data):
    data.write_bytes(b"")


def _shuffle_rows(files, manifest, data):
    mat = np.load(data)
    np.save(data, mat[np.random.default_rng(0).permutation(len(mat))])   # a valid file, same size


def _manifest_missing(files, manifest, data):
    files.manifest.unlink()
    old = data.stat().st_mtime - 60      # left so a while ago, not just renamed into place by a writer
    os.utime(data, (old, old))


def _manifest_garbled(files, manifest, data):
    files.manifest.write_text(files.manifest.read_text()[:100])


def _other_generation(files, manifest, data):
    """The manifest's data file holds the vectors of another generation (one row more)."""
    mat = np.load(data)
    np.save(data, np.vstack([mat, mat[:1]]))


def _ids_of_other_generation(files, manifest, data):
    """The manifest lists the ids in another order than its vectors (two ids swapped)."""
    ids = list(manifest["ids"])
    ids[0], ids[1] = ids[1], ids[0]
    files.manifest.write_text(json.dumps({**manifest, "ids": ids}))


DAMAGE = {"truncated": _truncate, "zero bytes": _empty, "shuffled rows": _shuffle_rows,
          "ids file missing": _manifest_missing, "ids file garbled": _manifest_garbled,
          "vectors of another generation": _other_generation, "ids of another generation": _ids_of_other_generation}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_snapshot_is_rebuilt_and_search_results_do_not_change(searched, damage):
    root, expected = searched
    ws = Workspace(root)
    files, manifest, data = _doc_files(ws)
    DAMAGE[damage](files, manifest, data)

    ws = Workspace(root)
    notices: list[str] = []
    ws.store.on_notice = notices.append
    assert diff_searches(search_results(ws), expected) == []
    assert len(notices) == 1 and "rebuilt" in notices[0] and "text/" in notices[0], notices
    # sound again: the next reader rebuilds nothing
    again = Workspace(root)
    again.store.on_notice = notices.append
    load_array(again.store, document_space(build_text_embedder(ws.config).key))
    assert len(notices) == 1


def test_search_on_a_zero_byte_snapshot_prints_results_and_one_notice(searched, capsys):
    root, expected = searched
    files, manifest, data = _doc_files(Workspace(root))
    data.write_bytes(b"")
    code, out, err = run_cli(capsys, "search", "a dog running on the grass", "-k", "3", "--json", "-w", str(root))
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert [h["image_id"] for h in hits] == [i for i, _ in expected["knn-consensus: a dog running on the grass"][:3]]
    notices = [line for line in err.splitlines() if "snapshot" in line]
    assert len(notices) == 1 and "is empty" in notices[0] and "rebuilt from the store" in notices[0], err
    assert "Aborted" not in err


def test_an_arrays_folder_replaced_by_a_file_is_repaired_with_one_notice(searched, capsys):
    """`arrays/` replaced by a plain file: search moves the file aside (nothing is deleted), rebuilds the
    snapshots from the store, says so once, and answers as before; the next search says nothing."""
    root, expected = searched
    arrays = Workspace(root).store.arrays_dir
    moved = root / "arrays.moved-by-test"
    arrays.rename(moved)
    arrays.write_text("not a folder\n")
    try:
        code, out, err = run_cli(capsys, "search", "a dog running on the grass", "-k", "3", "--json", "-w", str(root))
        assert code == 0, err
        assert [h["image_id"] for h in json.loads(out)["hits"]] == [
            i for i, _ in expected["knn-consensus: a dog running on the grass"][:3]]
        notices = [line for line in err.splitlines() if line.strip()]
        assert len(notices) == 1 and f"{arrays} was not a folder: moved it to arrays.not-a-folder-" in notices[0], err
        [aside] = root.glob("arrays.not-a-folder-*")
        assert aside.read_text() == "not a folder\n" and arrays.is_dir()
        code, out, err = run_cli(capsys, "search", "a dog running on the grass", "-k", "3", "--json", "-w", str(root))
        assert code == 0 and err.strip() == "", err
        assert diff_searches(search_results(Workspace(root)), expected) == []
    finally:                        # the module's workspace as it was, for the tests after this one
        for extra in root.glob("arrays.not-a-folder-*"):
            extra.unlink()
        if arrays.is_dir():
            shutil.rmtree(arrays)
        else:
            arrays.unlink(missing_ok=True)
        moved.rename(arrays)


def test_a_run_repairs_a_damaged_image_snapshot(searched):
    root, _ = searched
    ws = Workspace(root)
    embed = next(s for s in pipeline_stages(ws) if s.name == "embed-images")
    files = files_for(ws.store, embed.space)
    data = files.folder / json.loads(files.manifest.read_text())["file"]
    keys, mat = ws.store.get_vectors(embed.space)
    data.write_bytes(data.read_bytes()[:-64])
    notices: list[str] = []
    ws.store.on_notice = notices.append
    report = run_stage(embed)
    assert report.ran == 0                     # nothing to compute ...
    assert len(notices) == 1 and embed.space in notices[0]
    ids, arr = load_array(Store(root), embed.space)     # ... but the snapshot is whole again
    assert ids == keys and np.array_equal(np.asarray(arr), mat)


def test_a_snapshot_of_the_first_format_is_replaced_without_a_notice(tmp_path):
    store = Store(tmp_path)
    mat = np.arange(12, dtype=np.float32).reshape(4, 3)
    store.put_vectors("image/x", ["a", "b", "c", "d"], mat)
    store.arrays_dir.mkdir()
    np.save(store.arrays_dir / "image_x.npy", mat[::-1])           # what capsearch 1 wrote
    (store.arrays_dir / "image_x.ids.json").write_text(json.dumps({"space": "image/x", "version": 1, "ids": list("dcba")}))
    notices: list[str] = []
    store.on_notice = notices.append
    ids, arr = load_array(store, "image/x")
    assert ids == list("abcd") and np.array_equal(np.asarray(arr), mat) and notices == []
    assert sorted(p.name for p in store.arrays_dir.iterdir()) == [
        f"image_x.{store.space_state('image/x')[0]}.npy", "image_x.json"]


def test_an_unchanged_snapshot_is_not_rewritten(tmp_path):
    store = Store(tmp_path)
    store.put_vectors("image/x", ["a", "b"], np.eye(2, dtype=np.float32))
    data, manifest = export_array(store, "image/x")
    before = (data.stat().st_mtime_ns, manifest.stat().st_mtime_ns)
    load_array(store, "image/x")
    load_array(Store(tmp_path), "image/x")                # another process's reader: checks, keeps
    assert (data.stat().st_mtime_ns, manifest.stat().st_mtime_ns) == before
    store.put_vectors("image/x", ["c"], np.ones((1, 2), dtype=np.float32))
    ids, arr = load_array(store, "image/x")
    assert ids == ["a", "b", "c"] and arr.shape == (3, 2)


# ---------------------------------------------------------------------------------------- concurrency
ROLE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from pipeline.snapshots import export_array, load_array
    from pipeline.store import Store

    role, root, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store(root)
    notices = []
    store.on_notice = notices.append
    space = "image/race"
    report = {"role": role, "reads": 0, "mismatches": 0, "errors": [], "notices": notices}
    if role.startswith("writer"):
        me = int(role[-1])
        for r in range(rounds):
            keys = [f"k{(r * 7 + j) % 400:04d}" for j in range(5 + r % 11)]
            vecs = np.array([[int(k[1:]), r, me, 0.5] for k in keys], dtype=np.float32)
            try:
                store.put_vectors(space, keys, vecs)
                export_array(store, space)
            except Exception as exc:
                report["errors"].append(f"{type(exc).__name__}: {exc}")
    else:
        stop = time.monotonic() + 300
        while time.monotonic() < stop:
            try:
                ids, mat = load_array(store, space)
                mat = np.asarray(mat)
                report["reads"] += 1
                if len(ids) != len(mat) or any(int(mat[i, 0]) != int(k[1:]) for i, k in enumerate(ids)):
                    report["mismatches"] += 1
            except Exception as exc:
                report["errors"].append(f"{type(exc).__name__}: {exc}")
            if report["reads"] >= rounds and open(root + "/writers-done").read() == "2":
                break
    print(json.dumps(report))
""")


def test_readers_never_see_ids_and_vectors_that_do_not_belong_together(tmp_path):
    store = Store(tmp_path)
    store.put_vectors("image/race", ["k0000"], np.array([[0, 0, 0, 0.5]], dtype=np.float32))
    (tmp_path / "writers-done").write_text("0")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rounds = "300"
    procs = {role: subprocess.Popen([sys.executable, "-c", ROLE, role, str(tmp_path), rounds], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role in ("reader", "writer1", "writer2")}
    reports = {}
    try:
        for role in ("writer1", "writer2", "reader"):
            out, err = procs[role].communicate(timeout=600)
            assert procs[role].returncode == 0, err[-3000:]
            reports[role] = json.loads(out.splitlines()[-1])
            if role.startswith("writer"):
                done = tmp_path / "writers-done"
                done.write_text(str(int(done.read_text()) + 1))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for role, report in reports.items():
        assert report["errors"] == [], (role, report["errors"][:5])
        assert report["notices"] == [], (role, report["notices"][:5])   # replaced, never damaged
    assert reports["reader"]["reads"] >= 300 and reports["reader"]["mismatches"] == 0
    ids, mat = load_array(Store(tmp_path), "image/race")
    assert len(ids) == len(mat) and all(int(mat[i, 0]) == int(k[1:]) for i, k in enumerate(ids))
