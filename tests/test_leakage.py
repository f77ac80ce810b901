"""No leakage through duplicates: a target's own picture, stored again under another name (the same bytes) or
as a near-duplicate (re-encoded, resized: image similarity at or above ``neighbours.near_duplicate_threshold``),
must never put its captions into the target's prompt or its kNN consensus.

Before: the split assigned photos by id alone, so the same photo could be a target under one name and a
reference-DB photo under another, its own captions then shown to the captioner (the top neighbour, similarity
1.0); and near-duplicates were flagged in the neighbours table but their captions went into prompts and
consensus all the same. Either inflates every neighbour-based captioner's Recall.
"""
from __future__ import annotations

import shutil

import pytest

from pipeline.datasets.demo import IMAGE_DIR, generate_demo_world
from pipeline.stages.registry import stage_hash
from pipeline.splits import SplitItem, assign_splits
from pipeline.stages.run import run_stage
from pipeline.stages.registry import pipeline_stages
from pipeline.status import workspace_status
from tests.fixtures.collection import build_photo_folder
from tests.fixtures.photos import reencoded
from tests.fixtures.workspaces import make_workspace

pytestmark = pytest.mark.slow
N_IMAGES, N_TARGETS = 60, 20
STAGES = ["ingest", "embed-images", "neighbours", "prompts", "caption"]


def _run(ws) -> None:
    for stage in pipeline_stages(ws, STAGES):
        report = run_stage(stage)
        assert report.failed == 0, report


def _shown(ws, target: str) -> tuple[str, str]:
    """(the target's prompt, its kNN-consensus caption)."""
    prompt = ws.store.prompts(stage_hash(ws, "prompts"), [target])[target].text
    caption = ws.store.captions("knn-consensus", stage_hash(ws, "caption", "knn-consensus"))[target].text
    return prompt, caption


def test_splits_keep_identical_photos_on_one_side():
    items = [SplitItem(f"p{i:02d}", True, group=f"g{i % 7}") for i in range(28)]
    splits = assign_splits(items, 8, seed=3)
    for group in {i.group for i in items}:
        assert len({splits[i.id] for i in items if i.group == group}) == 1
    assert 8 <= sum(s == "target" for s in splits.values()) < 8 + 4
    # a folder: a captioned copy takes its uncaptioned twin into the reference DB
    folder = [SplitItem("a.jpg", True, group="x"), SplitItem("copy of a.jpg", False, group="x"),
              SplitItem("b.jpg", False, group="y")]
    assert assign_splits(folder, 10, seed=1) == {"a.jpg": "reference", "copy of a.jpg": "reference", "b.jpg": "target"}
    # photos on their own: the same split as before groups existed
    alone = [SplitItem(f"q{i}", True) for i in range(30)]
    assert assign_splits(alone, 10, seed=5) == assign_splits([SplitItem(i.id, True, group=f"own-{i.id}")
                                                              for i in alone], 10, seed=5)


def test_a_target_stored_again_in_the_reference_db_never_shows_its_own_captions(tmp_path):
    """A demo world where one target's photo is also stored under a reference photo's name: the two share a side
    of the split, and no target's prompt or consensus ever holds captions of its own picture."""
    world = tmp_path / "world"
    generate_demo_world(world, n_images=N_IMAGES, seed=7)
    names = sorted(p.name for p in (world / IMAGE_DIR).glob("*.jpg"))
    by_id = assign_splits([SplitItem(n, True) for n in names], N_TARGETS, seed=13)    # the split by id alone
    target = next(n for n in names if by_id[n] == "target")
    twin = next(n for n in names if by_id[n] == "reference")
    shutil.copyfile(world / IMAGE_DIR / target, world / IMAGE_DIR / twin)
    ws = make_workspace(tmp_path / "ws", data={"source": "demo", "path": str(world), "demo_images": N_IMAGES,
                                               "n_targets": N_TARGETS})
    _run(ws)
    store = ws.store
    shas = {r.id: r.sha256 for r in store.images()}
    captions = store.reference_captions()
    neighbours = store.neighbours(stage_hash(ws, "neighbours"))
    for t in store.image_ids("target"):
        prompt, caption = _shown(ws, t)
        own = [n.id for n in neighbours[t] if shas[n.id] == shas[t]]
        leaked = [c for n in own for c in captions.get(n, []) if c in prompt or c == caption]
        assert leaked == [], f"{t}: its own picture's captions reached its prompt or consensus"
    split = {r.id: r.split for r in store.images()}
    assert split[target] == split[twin], "identical photos sit on the same side of the split"


def test_a_near_duplicate_is_listed_and_marked_but_never_feeds_the_prompt_or_consensus(tmp_path):
    """A folder photo nobody captioned, and a re-encoded copy of it that the caption file describes: the copy
    is the target's nearest neighbour, listed as a near-duplicate and counted by status, and its captions
    reach neither the prompt nor the kNN consensus."""
    folder = build_photo_folder(tmp_path / "Photos", n=30, n_captioned=20)
    target = folder.uncaptioned[0]
    near = "edited/" + target.rsplit("/", 1)[-1].rsplit(".", 1)[0] + " (edited).jpg"
    (folder.root / near).parent.mkdir(parents=True, exist_ok=True)
    reencoded(folder.path(target), folder.root / near)
    own_words = ["A copy of the photo, captioned: a lighthouse with a red roof .",
                 "Words only this copy has: a zeppelin over the harbour ."]
    with open(folder.captions, "a", encoding="utf-8") as fh:
        fh.writelines(f'"{near}","{text}"\n' for text in own_words)
    ws = make_workspace(tmp_path / "ws", data={"source": "folder", "path": str(folder.root),
                                               "captions": str(folder.captions)})
    _run(ws)
    store = ws.store
    assert {r.id: r.split for r in store.images(ids=[target, near])} == {target: "target", near: "reference"}
    prompt, caption = _shown(ws, target)
    assert not any(text in prompt for text in own_words) and caption not in own_words
    listed = store.neighbours(stage_hash(ws, "neighbours"), [target])[target]
    first = listed[0]
    assert first.id == near and first.score >= ws.config.neighbours.near_duplicate_threshold and first.duplicate == 1
    assert sum(1 for n in listed if not n.duplicate) == ws.config.neighbours.k, "k usable neighbours besides it"
    assert workspace_status(ws).duplicates.with_near_duplicate_neighbour >= 1
