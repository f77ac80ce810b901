"""Ingest on good and bad input: every bad item reported with its reason, the rest goes on."""
from __future__ import annotations

import os

from pipeline.stages.run import run_stage
from pipeline.stages.ingest import IngestStage
from pipeline.status import workspace_status
from tests.fixtures.photos import make_photo


def _ingest(ws):
    return run_stage(IngestStage(ws))


def test_ingest_good_collection_splits_and_captions(flickr8k_like, workspace_factory):
    ws = workspace_factory(data={"source": "flickr8k", "path": str(flickr8k_like["root"]), "n_targets": 8, "seed": 3})
    report = _ingest(ws)
    assert report.done == 24 and report.failed == 0
    store = ws.store
    assert store.count_images("target") == 8
    assert store.count_images("reference") == 16
    caps = store.reference_captions()
    assert all(len(v) == 5 for v in caps.values()) and len(caps) == 24


def test_bad_input_reported_per_item_and_rest_goes_on(flickr8k_bad, workspace_factory):
    ws = workspace_factory(data={"source": "flickr8k", "path": str(flickr8k_bad["root"]), "n_targets": 8})
    report = _ingest(ws)
    # 24 good photos plus the four that are repaired on reading (CMYK, greyscale, alpha, 16-bit)
    assert report.done == 28
    assert report.failed == 4
    problems = {(p.stage, p.item): (p.severity, p.reason) for p in ws.store.problems()}
    for name, words in flickr8k_bad["bad"].items():
        severity, reason = problems[("ingest", name)]
        assert severity == "skipped" and words in reason, (name, reason)
    for name, words in {"cmyk.jpg": "CMYK", "grey.png": "greyscale", "alpha.png": "alpha", "sixteen.png": "16-bit"}.items():
        severity, reason = problems[("ingest", name)]
        assert severity == "repaired" and words in reason
    input_problems = [(item, reason) for (stage, item), (_, reason) in problems.items() if stage == "ingest/input"]
    reasons = " | ".join(r for _, r in input_problems)
    assert "no tab" in reasons
    assert "not a number" in reasons
    assert "duplicate caption id photo_001.jpg#0" in reasons
    assert any(item == "missing_photo.jpg" and "no such file" in r for item, r in input_problems)
    # the skipped photos are not in the store and not in any split
    assert ws.store.image("truncated.jpg") is None
    status = workspace_status(ws)
    ingest_row = next(s for s in status.stages if s.stage == "ingest")
    assert ingest_row.failed == 4 and ingest_row.done == 28
    listed = {p.item for p in status.problems}
    assert {"zero.jpg", "notanimage.jpg", "truncated.jpg", "huge.png", "missing_photo.jpg"} <= listed


def test_second_ingest_checks_nothing_unless_files_change(flickr8k_bad, workspace_factory):
    ws = workspace_factory(data={"source": "flickr8k", "path": str(flickr8k_bad["root"]), "n_targets": 8})
    _ingest(ws)
    again = _ingest(ws)
    assert again.ran == 0 and again.done == 0
    # repairing a skipped file makes it count on the next run
    make_photo(flickr8k_bad["root"] / "Flicker8k_Dataset" / "truncated.jpg", (10, 200, 10))
    os.utime(flickr8k_bad["root"] / "Flicker8k_Dataset" / "truncated.jpg", (1e9, 1e9))
    third = _ingest(ws)
    assert third.done == 1
    assert ws.store.image("truncated.jpg") is not None
    assert ("ingest", "truncated.jpg") not in {(p.stage, p.item) for p in ws.store.problems()}


def test_changing_seed_changes_split_but_not_the_images(flickr8k_like, workspace_factory):
    ws = workspace_factory(data={"source": "flickr8k", "path": str(flickr8k_like["root"]), "n_targets": 8, "seed": 1})
    _ingest(ws)
    first = set(ws.store.image_ids("target"))
    h1 = ws.store.get_meta("split_hash")
    os.environ["CAPSEARCH_DATA__SEED"] = "2"
    try:
        ws.reload_config()
        report = _ingest(ws)
    finally:
        del os.environ["CAPSEARCH_DATA__SEED"]
    assert report.done == 0  # no photo checked again
    assert set(ws.store.image_ids("target")) != first
    assert ws.store.get_meta("split_hash") != h1


def test_photos_whose_captions_were_lost_are_ingested_again_without_reading_the_files(flickr8k_like, workspace_factory):
    """A store written before a batch was one transaction can hold photos without their captions (a crash
    between the two commits): such photos count as missing and a run restores the captions. Files whose size
    and mtime are unchanged are not read again (a file changed in place, same size and mtime, stays as it was)."""
    ws = workspace_factory(data={"source": "flickr8k", "path": str(flickr8k_like["root"]), "n_targets": 8, "seed": 3})
    _ingest(ws)
    store = ws.store
    expected = store.reference_captions()
    lost = sorted(expected)[:10]
    with store.transaction() as c:
        c.executemany("DELETE FROM reference_captions WHERE image_id=?", [(i,) for i in lost])
    stage = IngestStage(ws)
    assert stage.counts().missing == 10 and set(lost).isdisjoint(stage.done_items())
    sha = store.image(lost[0]).sha256
    photo = flickr8k_like["root"] / "Flicker8k_Dataset" / lost[0]
    st = photo.stat()
    photo.write_bytes(b"\0" * st.st_size)                 # same size ...
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... same mtime: taken as unchanged
    report = _ingest(ws)
    assert report.done == 10 and report.failed == 0
    assert store.reference_captions() == expected
    assert store.image(lost[0]).sha256 == sha            # not read again
    assert IngestStage(ws).counts().missing == 0


def test_edited_captions_are_picked_up_by_the_next_ingest(flickr8k_like, workspace_factory):
    ws = workspace_factory(data={"source": "flickr8k", "path": str(flickr8k_like["root"]), "n_targets": 8, "seed": 3})
    _ingest(ws)
    tokens = flickr8k_like["root"] / "Flickr8k.token.txt"
    text = tokens.read_text()
    tokens.write_text(text.replace("photo_003.jpg#2\tA ", "photo_003.jpg#2\tAn edited caption: a "))
    try:
        assert IngestStage(ws).counts().missing == 1
        report = _ingest(ws)
        assert report.done == 1
        assert ws.store.reference_captions(["photo_003.jpg"])["photo_003.jpg"][2].startswith("An edited caption")
    finally:
        tokens.write_text(text)
