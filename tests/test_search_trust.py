"""Search results a person would trust, on a real folder collection (``tests/fixtures/collection.py``): some
photos captioned in a CSV, most not, one photo stored twice (the same bytes), and one saved again smaller.

* ``--like`` ranks by what the photos look like: the identical copy, then the resized copy, then the rest by
  image similarity with caption evidence only between captions written for the photos (a kNN-consensus
  caption is copied from a neighbour: it says what the neighbour shows);
* the identical copy is found by its twin's human captions (listed as the twin's), is no target of its own,
  and stays out of every prompt;
* a folder with no caption at all, after the pipeline ran in the lite profile: search says what is true and
  what will work.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.search_service import IMAGE, SearchIndex
from pipeline.stages.run import run_stage
from pipeline.stage_keys import stage_hash
from pipeline.stages.registry import pipeline_stages
from pipeline.workspace import Workspace
from tests.fixtures.cli import run_cli
from tests.fixtures.collection import PhotoFolder, build_photo_folder
from tests.fixtures.workspaces import make_workspace

pytestmark = pytest.mark.slow

STAGES = ["ingest", "embed-images", "neighbours", "prompts", "caption", "embed-captions"]
RESIZED = "resized/small copy.jpg"


def _run(ws: Workspace) -> None:
    for stage in pipeline_stages(ws, STAGES):
        outcome = run_stage(stage)
        assert outcome.status in ("completed", "not applicable"), outcome


def _resize(src: Path, dest: Path, factor: float = 0.6) -> None:
    from PIL import Image, ImageOps

    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.resize((round(img.width * factor), round(img.height * factor)), Image.Resampling.LANCZOS) \
            .save(dest, format="JPEG", quality=85)


def _knn(ws: Workspace) -> dict[str, str]:
    rows = ws.store.captions("knn-consensus", stage_hash(ws, "caption", "knn-consensus"), status="ok")
    return {i: r.text for i, r in rows.items()}


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Workspace, PhotoFolder, str, str]:
    """(workspace, folder, X, T): the folder run once; X a captioned photo whose caption kNN consensus copied
    for the target T; then X saved again smaller (RESIZED) and the folder run again, as a person adds photos."""
    root = tmp_path_factory.mktemp("trust")
    folder = build_photo_folder(root / "Photos", n=40, n_captioned=24)
    ws = make_workspace(root / "ws", "lite", data={"source": "folder", "path": str(folder.root),
                                                   "captions": str(folder.captions)})
    _run(ws)
    human = ws.store.reference_captions()
    copied = {t: x for t, text in sorted(_knn(ws).items()) for x in folder.captioned
              if x != folder.original and text in human.get(x, [])}
    assert copied, "kNN consensus copied no caption"
    target, x = next(iter(copied.items()))
    _resize(folder.path(x), folder.root / RESIZED)
    _run(ws)
    return ws, folder, x, target


def test_like_ranks_copies_first_and_never_counts_a_copied_caption(collection):
    ws, folder, x, target = collection
    assert RESIZED in ws.store.image_ids("target")
    index = SearchIndex(ws)
    result = index.like(x, k=len(index.photo_ids))
    assert result.by_captions and result.example_id == x
    hits = {h.image_id: h for h in result.hits}
    assert x not in hits and len(result.hits) == len(index.photo_ids) - 1
    # the copy of X saved smaller comes first: a near-duplicate
    assert result.hits[0].image_id == RESIZED and result.hits[0].matched == "near-duplicate"
    # the target whose kNN-consensus caption was copied from X: ranked by its image alone
    assert hits[target].matched == IMAGE
    assert hits[target].rank > 1
    # no caption copied from a neighbour is ever the evidence
    knn = _knn(ws)
    for h in result.hits:
        assert "knn-consensus" not in h.matched and not (h.matched.startswith(IMAGE) and h.caption == knn.get(h.image_id)
                                                         and h.matched != IMAGE), h


def test_like_lists_the_identical_copy_first_then_near_duplicates(collection):
    ws, folder, _x, _t = collection
    index = SearchIndex(ws)
    hits = index.like(folder.original, k=5).hits
    assert hits[0].image_id == folder.copy and hits[0].matched == "identical copy"
    assert hits[0].via == folder.original and hits[0].caption in folder.truth[folder.original]
    by_file = index.like(str(folder.path(folder.copy)), k=3).hits      # by file: the original is its twin
    assert by_file[0].image_id == folder.original and by_file[0].matched == "identical copy"
    ranks = [{"identical copy": 0, "near-duplicate": 1}.get(h.matched, 2) for h in index.like(folder.original, 40).hits]
    assert ranks == sorted(ranks)


def test_an_identical_copy_is_found_by_its_twins_captions(collection, home, capsys):
    ws, folder, _x, _t = collection
    original, copy = folder.original, folder.copy
    assert ws.store.image(copy).split == "reference"                 # no target of its own ...
    assert copy not in _knn(ws)                                       # ... so never captioned by itself
    prompts = ws.store.prompts(stage_hash(ws, "prompts"))
    assert prompts and all(copy not in p.text for p in prompts.values())
    neighbours = ws.store.neighbours(stage_hash(ws, "neighbours"))
    assert all(n.id != copy for ns in neighbours.values() for n in ns)   # nor a neighbour shown in a prompt

    caption = ws.store.reference_captions([original])[original][0]
    index = SearchIndex(ws)
    hits = index.search(caption, k=len(index.photo_ids))
    assert len(hits) == len(index.photo_ids)                          # every photo is found
    top = {h.image_id: h for h in hits[:2]}
    assert set(top) == {original, copy} and top[original].score == top[copy].score
    assert top[copy].matched == "human" and top[copy].via == original and top[copy].caption == caption
    assert top[original].via == ""

    code, out, err = run_cli(capsys, "search", caption, "-k", "2", "--json", "-w", str(ws.root))
    assert code == 0, err
    listed = {h["image_id"]: h for h in json.loads(out)["hits"]}
    assert listed[copy]["matched"] == "human" and listed[copy]["via"] == original
    code, out, err = run_cli(capsys, "search", caption, "-k", "2", "-w", str(ws.root))
    assert code == 0, err
    assert "human (of" in out


def test_a_folder_without_captions_says_what_is_true_and_what_will_work(tmp_path, home, capsys):
    folder = build_photo_folder(tmp_path / "Photos", n=12, with_captions=False)
    ws = make_workspace(tmp_path / "ws", "lite", data={"source": "folder", "path": str(folder.root)})
    _run(ws)
    code, out, err = run_cli(capsys, "search", "a cat", "-w", str(ws.root))
    assert code == 1
    said = " ".join(err.split())
    assert "run the pipeline" not in said
    for part in ("no photo has a caption", "knn-consensus", "no photo has a human caption",
                 "lite profile has no captioner that writes a caption from the pixels", "--captions FILE",
                 "blip-base", "search --like PHOTO"):
        assert part in said, (part, said)
    code, out, err = run_cli(capsys, "search", "--like", folder.ids[3], "-w", str(ws.root))
    assert code == 0, err
    assert "photos like" in out
