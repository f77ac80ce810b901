"""A person's own photo folder, end to end, as a new user runs it: `data folder`, `run`, `status`, `search`,
`search --like`, with real-looking generated photos (``tests/fixtures/collection.py``), some captioned in a
CSV and most not, one stored twice.

What a collection is not: a benchmark. Its uncaptioned photos are the targets, which have no held-out
captions, so the evaluation stages are *not applicable* (not failed); with no caption at all, neither are
the neighbour-based captioners, while the others still run. Search covers every photo by default.
"""
from __future__ import annotations

import json

import pytest

from pipeline.applicability import NO_CAPTIONED_PHOTO, NO_HELD_OUT_CAPTIONS
from tests.fixtures.cli import run_cli
from tests.fixtures.collection import build_photo_folder

pytestmark = pytest.mark.slow

EVALUATION_STAGES = ("caption-metrics", "queries", "evaluate", "report")


def _states(status: dict) -> dict[str, dict]:
    return {s["stage"]: s for s in status["stages"]}


def test_a_partly_captioned_folder_runs_searches_and_finds_by_example(home, capsys, photo_folder, prefect_harness):
    ws = home / "my-workspace"
    folder = photo_folder
    code, out, err = run_cli(capsys, "data", "folder", str(folder.root), "--captions", str(folder.captions),
                             "-w", str(ws))
    assert code == 0, err
    assert f"ingested {len(folder.ids)} photos" in out

    code, out, err = run_cli(capsys, "run", "-w", str(ws))
    assert code == 0, err
    assert "not applicable" in out and "error" not in err.lower()

    code, out, err = run_cli(capsys, "status", "--json", "-w", str(ws))
    assert code == 0, err
    status = json.loads(out)
    states = _states(status)
    for name in EVALUATION_STAGES:
        assert states[name]["state"] == "not applicable" and states[name]["not_applicable"] == NO_HELD_OUT_CAPTIONS
    for name in ("ingest", "embed-images", "neighbours", "prompts", "caption:knn-consensus", "embed-captions:human",
                 "embed-captions:knn-consensus"):
        assert states[name]["state"] == "done", states[name]
    targets = len(folder.uncaptioned) - 1                  # the copy of a captioned photo joins it in the reference DB
    assert status["images"] == {"total": len(folder.ids), "reference": len(folder.captioned) + 1, "target": targets}
    assert states["caption:knn-consensus"]["done"] == targets
    assert status["duplicates"]["identical_photos"] == 1

    code, out, _ = run_cli(capsys, "status", "-w", str(ws))
    assert f"not applicable: {NO_HELD_OUT_CAPTIONS}"[:60] in " ".join(out.split())

    # a captioned photo, found by one of its human captions
    captioned = folder.captioned[5]
    code, out, err = run_cli(capsys, "search", folder.truth[captioned][1], "--json", "-w", str(ws))
    assert code == 0, err
    found = json.loads(out)
    assert found["scope"] == "collection" and found["method"] == "captions"
    assert found["hits"][0]["image_id"] == captioned and found["hits"][0]["matched"] == "human"

    # an uncaptioned photo, found by the caption kNN consensus wrote for it
    uncaptioned = next(i for i in folder.uncaptioned if i != folder.copy)
    code, out, err = run_cli(capsys, "search", _generated_caption(ws, uncaptioned), "--json", "-w", str(ws))
    assert code == 0, err
    hits = {h["image_id"]: h for h in json.loads(out)["hits"]}
    assert uncaptioned in hits and hits[uncaptioned]["matched"] == "knn-consensus"

    # the experiment's view lists targets only
    code, out, err = run_cli(capsys, "search", folder.truth[captioned][1], "--scope", "targets", "--json",
                             "-w", str(ws))
    assert code == 0, err
    assert all(h["image_id"] in folder.uncaptioned for h in json.loads(out)["hits"])

    # more like this photo: its identical copy first, by id and by file path
    for example in (folder.original, str(folder.path(folder.original))):
        code, out, err = run_cli(capsys, "search", "--like", example, "--json", "-w", str(ws))
        assert code == 0, err
        like = json.loads(out)
        assert like["photo"] == folder.original and like["hits"][0]["image_id"] == folder.copy
        assert folder.original not in [h["image_id"] for h in like["hits"]]

    code, out, err = run_cli(capsys, "search", "--like", folder.original, "-w", str(ws))
    assert code == 0 and "photos like" in out and folder.copy.rsplit("/", 1)[-1][:12] in out


def _generated_caption(ws, image_id: str) -> str:
    from pipeline.stages.registry import stage_hash
    from pipeline.workspace import Workspace

    w = Workspace(ws)
    return w.store.captions("knn-consensus", stage_hash(w, "caption", "knn-consensus"))[image_id].text


def test_a_folder_without_any_caption_runs_what_applies(home, capsys, tmp_path, tiny_blip_dir, prefect_harness):
    """No caption file at all: the neighbour-based stages say why they do not apply, BLIP still captions every
    photo, the run exits 0, and search finds photos by BLIP's captions and by example."""
    folder = build_photo_folder(tmp_path / "uncaptioned", n=12, with_captions=False)
    ws = home / "bare"
    code, _, err = run_cli(capsys, "data", "folder", str(folder.root), "-w", str(ws))
    assert code == 0, err
    from pipeline.config_file import update_config_file

    update_config_file(ws / "capsearch.toml", {
        "captioners": {"enabled": ["knn-consensus", "blip-tiny"],
                       "blip-tiny": {"kind": "blip", "model": str(tiny_blip_dir), "batch_size": 4, "max_new_tokens": 6}},
        "runtime": {"device": "cpu"}, "search": {"hybrid_captioner": "blip-tiny"}})
    code, out, err = run_cli(capsys, "run", "-w", str(ws))
    assert code == 0, err
    code, out, _ = run_cli(capsys, "status", "--json", "-w", str(ws))
    states = _states(json.loads(out))
    for name in ("neighbours", "prompts", "caption:knn-consensus", "embed-captions:knn-consensus"):
        assert states[name]["not_applicable"] == NO_CAPTIONED_PHOTO, states[name]
    for name in EVALUATION_STAGES:
        assert states[name]["state"] == "not applicable"
    assert states["embed-captions:human"]["state"] == "not applicable"
    assert states["caption:blip-tiny"]["state"] == "done" and states["caption:blip-tiny"]["done"] == len(folder.ids)

    from pipeline.stages.registry import stage_hash
    from pipeline.workspace import Workspace

    w = Workspace(ws)
    blip = w.store.captions("blip-tiny", stage_hash(w, "caption", "blip-tiny"))
    some = folder.ids[3]
    code, out, err = run_cli(capsys, "search", blip[some].text, "--json", "-k", "40", "-w", str(ws))
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert some in [h["image_id"] for h in hits] and {h["matched"] for h in hits} == {"blip-tiny"}
    code, out, err = run_cli(capsys, "search", "--like", folder.original, "--json", "-w", str(ws))
    assert code == 0, err
    assert json.loads(out)["hits"][0]["image_id"] == folder.copy

    code, out, err = run_cli(capsys, "evaluate", "-w", str(ws))
    assert code == 0 and "not applicable" in out, err


def test_the_nightly_deployment_runs_a_collection_to_completion_and_picks_up_new_photos(
        tmp_path, process_tag, prefect_harness):
    """`capsearch serve` (a real process, serving the nightly deployment against the session's Prefect server)
    executes a run of the deployment created through Prefect's API: on a partly captioned folder it completes,
    the evaluation stages are recorded as not applicable, every photo is captioned; photos added to the folder
    are picked up by the next night's run, which computes only them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from flows.naming import nightly_deployment_name
    from pipeline.workspace import Workspace
    from tests.fixtures.workspaces import make_workspace

    folder = build_photo_folder(tmp_path / "inbox", n=20, n_captioned=12)
    ws = make_workspace(tmp_path / "nightly", data={"source": "folder", "path": str(folder.root),
                                                    "captions": str(folder.captions)})
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = process_tag.env({**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": repo,
                           "CAPSEARCH_HOME": str(tmp_path), "PREFECT_RUNNER_POLL_FREQUENCY": "1", "COLUMNS": "120"})
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        serve = subprocess.Popen([sys.executable, "-m", "capsearch", "-w", str(ws.root), "serve"], cwd=repo, env=env,
                                 stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while "serving; Ctrl-C stops" not in log.read_text(errors="replace"):
            assert serve.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        name = f"capsearch-pipeline/{nightly_deployment_name(ws)}"

        first = run_deployment(name, timeout=600)
        assert first.state.is_completed(), (first.state, log.read_text(errors="replace")[-3000:])
        store = Workspace(ws.root).store
        runs = {r.stage: r for r in reversed(store.stage_runs(limit=100))}
        for stage in EVALUATION_STAGES:
            assert runs[stage].status == "not applicable" and runs[stage].message == NO_HELD_OUT_CAPTIONS
            # recorded by the one stage-run recorder: it belongs to the run that found it not applicable
            assert runs[stage].run_id == runs["ingest"].run_id is not None
        targets = store.image_ids("target")
        assert len(targets) == len(folder.uncaptioned) - 1
        # the night's run in the Prefect UI: named and tagged for its workspace, with its summary (issue 24)
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        from flows.naming import artifact_key, workspace_tag

        assert first.name == "nightly · pipeline" and workspace_tag(ws) in first.tags
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[first.id])))
        [night] = [a for a in artifacts if a.key == artifact_key(ws, "summary")]
        assert "**Completed**" in night.data and "| evaluate | not applicable |" in night.data
        from pipeline.stages.registry import stage_hash

        knn = stage_hash(Workspace(ws.root), "caption", "knn-consensus")
        assert set(store.captions("knn-consensus", knn, status="ok")) == set(targets)

        added = build_photo_folder(tmp_path / "more", n=3, with_captions=False, first=60)
        for image_id in added.ids:
            if image_id != added.copy:
                dest = folder.root / "new" / image_id
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(added.path(image_id).read_bytes())
        second = run_deployment(name, timeout=600)
        assert second.state.is_completed(), (second.state, log.read_text(errors="replace")[-3000:])
        store = Workspace(ws.root).store
        latest = {r.stage: r for r in reversed(store.stage_runs(limit=100)) if r.flow_run_id}
        assert latest["ingest"].done == 3 and latest["embed-images"].done == 3
        assert latest["caption"].done == 3, "the next night captions the new photos only"
        assert set(store.captions("knn-consensus", knn, status="ok")) == set(store.image_ids("target"))
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=120)
    assert code == 128 + signal.SIGTERM, log.read_text(errors="replace")[-3000:]
    assert process_tag.wait_gone(20) == []


# -- incremental updates -----------------------------------------------------------------------------------------
class PhotoOpens:
    """Every open of a file under a folder, by any thread of this process: a CPython audit hook (``open``
    events), so nothing capsearch ships is replaced or wrapped. check_image opens a photo twice (decode, then
    hash); an unchanged file is not opened at all, a touched one once (hashed, not decoded)."""

    def __init__(self, root):
        import sys

        self.root = str(root)
        self.opened: list[str] = []
        self.active = False
        sys.addaudithook(self._hook)          # hooks cannot be removed: ``active`` switches it off

    def _hook(self, event: str, args: tuple) -> None:
        if self.active and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if path.startswith(self.root) and not path.endswith(".csv"):
                self.opened.append(os.path.relpath(path, self.root))

    def count(self) -> dict[str, int]:
        from collections import Counter

        return dict(Counter(self.opened))


import os  # noqa: E402 - used by PhotoOpens above


def _neighbour_lists(ws) -> dict[str, list[tuple[str, int]]]:
    from pipeline.stages.registry import stage_hash

    return {t: [(n.id, n.duplicate) for n in ns] for t, ns in ws.store.neighbours(stage_hash(ws, "neighbours")).items()}


def _prompt_inputs(ws) -> dict[str, list]:
    """Per photo, what its prompt and kNN consensus read: its neighbours that are not duplicates of it, with their
    human captions (from the tables, as a reader of the store would find them)."""
    captions = ws.store.reference_captions(split="reference")
    return {t: [(n, captions.get(n, [])) for n, d in ns if not d] for t, ns in _neighbour_lists(ws).items()}


def _rewrite_csv(folder, edits: dict[str, str], drop: set[str], extra: dict[str, list[str]]) -> None:
    import csv

    rows = list(csv.reader(open(folder.captions, encoding="utf-8")))
    header, body = rows[0], rows[1:]
    out, seen = [header], set()
    for ref, text in body:
        full = next((i for i in folder.ids if i == ref or i.rsplit("/", 1)[-1] == ref), ref)
        if full in drop:
            continue
        if full in edits and full not in seen:
            text, seen = edits[full], seen | {full}
        out.append([ref, text])
    out += [[i, t] for i, texts in extra.items() for t in texts]
    with open(folder.captions, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(out)


def test_adding_removing_and_replacing_photos_computes_exactly_what_changed(tmp_path, prefect_harness):
    from flows.api import run
    from pipeline.workspace import Workspace
    from tests.fixtures.workspaces import make_workspace

    folder = build_photo_folder(tmp_path / "Photos", n=40, n_captioned=26)
    settings = {"data": {"source": "folder", "path": str(folder.root), "captions": str(folder.captions)}}
    ws = make_workspace(tmp_path / "ws", **settings)
    assert run(ws).status == "completed"
    old_lists, old_inputs = _neighbour_lists(ws), _prompt_inputs(ws)
    old_targets = set(ws.store.image_ids("target"))

    # the changes: 10 added (5 of them captioned), 3 removed, 2 replaced, 1 caption edited, 1 file touched
    fresh = build_photo_folder(tmp_path / "elsewhere", n=12, with_captions=False, first=300)
    added = [f"new/{i.replace('/', ' - ')}" for i in fresh.ids[:10]]
    for src, dest in zip(fresh.ids[:10], added):
        (folder.root / dest).parent.mkdir(parents=True, exist_ok=True)
        (folder.root / dest).write_bytes(fresh.path(src).read_bytes())
    captioned_refs = [i for i in folder.captioned if i != folder.original]
    targets_before = sorted(old_targets)
    removed = [captioned_refs[3], targets_before[0], targets_before[1]]
    for image_id in removed:
        folder.path(image_id).unlink()
    replaced = [captioned_refs[6], targets_before[2]]
    for image_id, src in zip(replaced, fresh.ids[10:12]):
        folder.path(image_id).write_bytes(fresh.path(src).read_bytes())
    edited, touched = captioned_refs[8], targets_before[3]
    st = folder.path(touched).stat()
    os.utime(folder.path(touched), (st.st_atime, st.st_mtime + 60))
    _rewrite_csv(folder, {edited: "An edited caption: a lighthouse on a rocky shore at dusk ."}, set(removed[:1]),
                 {dest: fresh.truth[src][:2] for src, dest in zip(fresh.ids[:5], added[:5])})

    opens = PhotoOpens(folder.root)
    opens.active = True
    try:
        summary = run(Workspace(ws.root))
    finally:
        opens.active = False
    assert summary.status == "completed"
    computed = {o.stage: o.items for o in summary.stages}

    clean = make_workspace(tmp_path / "clean", **settings)
    assert run(clean).status == "completed"
    ws = Workspace(ws.root)
    new_lists, new_inputs = _neighbour_lists(clean), _prompt_inputs(clean)
    targets = set(clean.store.image_ids("target"))
    assert set(ws.store.image_ids("target")) == targets
    assert {t: v for t, v in _neighbour_lists(ws).items() if t in targets} == new_lists
    assert {t: v for t, v in _prompt_inputs(ws).items() if t in targets} == new_inputs

    assert computed["ingest"] == len(added) + len(replaced) + 2          # + the edited caption, the touched file
    assert computed["embed-images"] == len(added) + len(replaced)
    changed_lists = {t for t in targets if old_lists.get(t) != new_lists[t] or t in replaced}
    assert computed["neighbours"] == len(changed_lists) > len(added) - 5
    changed_inputs = {t for t in targets if old_inputs.get(t) != new_inputs[t]}
    assert computed["prompts"] == computed["caption:knn-consensus"] == len(changed_inputs)
    assert len(changed_inputs) < len(targets), "targets whose inputs did not change were reused"
    reused = {o.stage: o.reused for o in summary.stages}
    assert reused["ingest"] == len(folder.ids) - len(removed) + len(added) - computed["ingest"]

    decoded = set(added) | set(replaced)
    counts = opens.count()
    assert set(counts) == decoded | {touched}, "only new and changed photos are read"
    assert counts[touched] == 1, "a touched file is hashed, not decoded"

    status = __import__("pipeline.status", fromlist=["workspace_status"]).workspace_status(ws)
    assert sorted(status.removed) == sorted(removed)
    from pipeline.search_service import SearchIndex

    index = SearchIndex(ws)
    assert not set(removed) & set(index.photo_ids)
    assert not set(removed) & {h.image_id for h in index.search("a photo", k=100)}

    # an unchanged folder: rescanned without opening a single photo, nothing computed
    opens.opened.clear()
    opens.active = True
    try:
        again = run(Workspace(ws.root))
    finally:
        opens.active = False
    assert again.status == "completed" and opens.opened == []
    assert all(o.items == 0 for o in again.stages if o.status == "completed"), [(o.stage, o.items) for o in again.stages]
